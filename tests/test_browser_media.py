"""The media and profile pages in headless Chromium through the gateway: what a person sees."""
from playwright.sync_api import expect

from support.web import tiny_png


def register(page, gateway, username):
    page.goto(gateway + "/register")
    page.fill("#f-username", username)
    page.fill("#f-password", "correct horse")
    page.click("button[type=submit]")
    expect(page).to_have_url(gateway + "/")


def test_upload_on_the_media_page_and_see_the_picture(page, gateway, username, tmp_path):
    register(page, gateway, username)
    page.click("text=Your media")
    expect(page).to_have_url(gateway + "/media/")
    expect(page.locator("#no-media")).to_be_visible()

    picture = tmp_path / "holiday.png"
    picture.write_bytes(tiny_png(4, 3))
    page.set_input_files("#f-file", str(picture))
    page.click("#upload-form button[type=submit]")
    expect(page).to_have_url(gateway + "/media/")
    item = page.locator(".media-item")
    expect(item).to_have_count(1)
    expect(item.locator("a")).to_have_text("holiday.png")
    img = item.locator("img.preview")
    expect(img).to_have_js_property("complete", True)
    assert img.evaluate("i => i.naturalWidth") == 4, "the picture was served (by nginx, via its signed link)"

    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture")
    page.set_input_files("#f-file", str(fake))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("415")
    page.goto(gateway + "/media/")
    expect(page.locator(".media-item")).to_have_count(1)


def test_avatar_on_the_profile_shows_on_the_home_page(page, gateway, username, tmp_path):
    register(page, gateway, username)
    page.goto(gateway + "/profile")
    avatar = tmp_path / "me.png"
    avatar.write_bytes(tiny_png(5, 5, (10, 120, 200)))
    page.set_input_files("#f-avatar", str(avatar))
    page.click("#avatar-form button[type=submit]")
    expect(page).to_have_url(gateway + "/profile")
    page.goto(gateway + "/")
    img = page.locator("img.avatar").first
    expect(img).to_have_js_property("complete", True)
    assert img.evaluate("i => i.naturalWidth") == 5

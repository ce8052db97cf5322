"""The auth pages in a real browser (headless Chromium) through the gateway."""
from playwright.sync_api import expect

from webchat_testing.sessions import COOKIE


def test_register_logout_login_in_a_browser(page, gateway, username, tmp_path):
    page.goto(gateway + "/")
    expect(page).to_have_url(gateway + "/login?next=/")
    header = page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor")
    assert header == "rgb(46, 50, 56)", "the shared stylesheet is served through the gateway"

    page.click("text=Register")
    page.fill("#f-username", username)
    page.fill("#f-password", "short")
    page.click("button[type=submit]")
    expect(page.locator("#e-password")).to_contain_text("at least 8")
    expect(page.locator("#f-username")).to_have_value(username)  # the form is kept

    page.fill("#f-password", "correct horse")
    page.click("button[type=submit]")
    expect(page).to_have_url(gateway + "/")
    expect(page.locator("#username")).to_have_text(username)
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find(COOKIE) == -1, "HttpOnly: invisible to scripts"
    page.screenshot(path=str(tmp_path / "home.png"))

    page.click("text=Log out")
    expect(page).to_have_url(gateway + "/login")
    page.goto(gateway + "/chat/")
    expect(page).to_have_url(gateway + "/login?next=/chat/")

    page.fill("#f-username", username)
    page.fill("#f-password", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_have_text("Wrong username or password.")

    page.fill("#f-password", "correct horse")
    page.click("button[type=submit]")
    expect(page).to_have_url(gateway + "/chat/")
    expect(page.locator("#chat-user")).to_have_text(username)


def test_error_pages_are_html_without_traces(page, gateway):
    resp = page.goto(gateway + "/no/such/page")
    assert resp.status == 404
    expect(page.locator("h1")).to_have_text("404")
    assert "Traceback" not in page.content()

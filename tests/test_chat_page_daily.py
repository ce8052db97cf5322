"""The chat page as people use it every day, in headless Chromium through the gateway, against
the chat test stack (two chat processes): history page by page, who wrote what and when,
message states, typing, edits and deletions, unread counts across tabs, notifications, new
contacts and presence, pictures, audio and video, a phone's screen and keyboard, the reconnect
banner, and text from others shown as text.  Every test fails on any console error of its
pages (the ``chat_page`` fixture).  Screenshots of the main screens go to
``test-artifacts/screenshots/``."""
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from files_service.config import FilesConfig
from support.chat import Closed, Person
from support.web import tiny_png
from webchat_testing.media import SAMPLES

pytestmark = pytest.mark.timeout(120)

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
API = {"Accept": "application/json"}
#: Messages per second a raw test socket sends, under the chat test stack's per-socket limit
#: (CHAT_RATE_LIMIT=20/s, burst 30: CHAT_TEST_ENV in conftest.py).
RATE, BURST = 15.0, 20.0
ONLINE = re.compile(r"\bonline\b")
PHONES = ({"width": 390, "height": 844}, {"width": 360, "height": 740}, {"width": 430, "height": 932})

#: Run in the test's pages before the page's own script:
#: - ``document.hidden`` under the test's control: ``__setHidden(bool)`` sets it and fires
#:   ``visibilitychange`` as a browser does when the tab is hidden or shown again;
#: - every ``Notification`` created is recorded in ``__notes`` (and still created);
#: - ``__states[text]``: the states (``data-state``) one's own message was shown in, in order.
PROBES = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true,
                                                                 get: () => (hidden ? "hidden" : "visible") });
  window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event("visibilitychange")); };
  window.__notes = [];
  if (window.Notification) {
    window.Notification = class extends window.Notification {
      constructor(title, options) {
        super(title, options);
        window.__notes.push({ title, body: options && options.body });
      }
    };
  }
  window.__states = {};
  new MutationObserver(() => {
    document.querySelectorAll("#messages li.msg.mine[data-state]").forEach((li) => {
      const seen = (window.__states[li.querySelector(".text").textContent] ||= []);
      if (seen[seen.length - 1] !== li.dataset.state) seen.push(li.dataset.state);
    });
  }).observe(document, { childList: true, subtree: true });
})();
"""


# ---- helpers ---------------------------------------------------------------------------------

class Sender:
    """A raw chat socket that sends no faster than the test stack's rate limit and waits for
    each message's ack (reading its socket as it goes, so its send queue never fills)."""

    def __init__(self, person, not_on=None):
        self.person = person
        self.not_on = not_on
        self.sock = self._connect()
        self.tokens, self.at = BURST, time.monotonic()

    def _connect(self):
        return self.person.connect_not_on(self.not_on) if self.not_on else self.person.connect()

    def send(self, data, to):
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.at) * RATE)
        self.at = now
        if self.tokens < 1:
            time.sleep((1 - self.tokens) / RATE)  # the rate limit, not a wait for a condition
            self.tokens, self.at = 1.0, time.monotonic()
        self.tokens -= 1
        cid = uuid.uuid4().hex[:12]
        try:
            self.sock.send(receiver=to.name, data=data, cid=cid)
            ack = self.sock.expect("ack", cid=cid)
        except Closed as closed:
            # A socket left idle while pages load answers no ping (websocket-client answers
            # them only while it reads): closed 1001 after two ping intervals.  A client then
            # reconnects and sends again with the same cid, stored once.
            if closed.code != 1001:
                raise
            self.sock = self._connect()
            self.sock.send(receiver=to.name, data=data, cid=cid)
            ack = self.sock.expect("ack", cid=cid)
        return ack["id"], self.person.name, data

    def close(self):
        self.sock.close()


def exchange(a, b, n):
    """``n`` messages between a and b, taking turns ("m000" by a, "m001" by b, ...): their
    (id, sender, text) in the order stored."""
    sa, sb = Sender(a), Sender(b)
    try:
        return [(sa.send(f"m{i:03d}", b) if i % 2 == 0 else sb.send(f"m{i:03d}", a)) for i in range(n)]
    finally:
        sa.close()
        sb.close()


def messages(page):
    return page.locator("#messages li.msg")


def message(page, text):
    """The message showing ``text`` (exactly) on ``page``."""
    return messages(page).filter(has=page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$")))


def shown(page):
    """(id, sender, text) of every message shown, in order."""
    return [tuple(m) for m in page.eval_on_selector_all(
        "#messages li.msg", "els => els.map((li) => [li.dataset.id, li.querySelector('.who').textContent,"
                            " li.querySelector('.text').textContent])")]


def contact(page, person):
    return page.locator(f"#contacts li[data-user='{person.name}']")


def badge(page, person):
    return contact(page, person).locator(".unread")


def open_conv(page, person):
    contact(page, person).click()
    expect(page.locator("#conv-title")).to_have_text(person.name)
    expect(page.locator("#chat")).to_have_attribute("data-view", "conv")


def send(page, text):
    """Type ``text`` and press Enter (the keyboard way to send)."""
    page.fill("#send-text", text)
    page.press("#send-text", "Enter")


def load_all(page, n):
    """Open every older page of the conversation shown: scroll to the top once, then the
    "Load older messages" button, until ``n`` messages are shown."""
    box = page.locator("#messages")
    expect(messages(page)).to_have_count(50)  # the newest page
    # scrolling up loads the page before (the event is sent too: a box already at its top, its
    # layout not finished, fires none when set to 0)
    box.evaluate("box => { box.scrollTop = 0; box.dispatchEvent(new Event('scroll')); }")
    expect(messages(page)).to_have_count(min(n, 100))
    while messages(page).count() < n:
        count = messages(page).count()
        page.click("#load-older")
        expect(messages(page)).not_to_have_count(count)
    expect(messages(page)).to_have_count(n)
    expect(page.locator("#load-older")).to_be_hidden()


def click_now(button):
    """Click a message's button as soon as it shows.  The list is rebuilt on every frame, so
    Playwright's click (which waits for a stable element) can take a second of retries, and the
    test stack's edit window (CHAT_EDIT_WINDOW) is 4 s."""
    expect(button).to_be_visible()
    button.dispatch_event("click")


def reload(page):
    page.reload()
    expect(page.locator("#chat-status")).to_have_attribute("data-state", "online")


def no_horizontal_overflow(page):
    sw, cw = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert sw <= cw, f"the page scrolls sideways: {sw} > {cw} px"


def screenshot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def upload_avatar(person):
    """Give ``person`` a real picture as avatar (POST /media/avatar with their session)."""
    b = person.browser
    resp = b.post("/media/avatar", files={"file": ("me.png", tiny_png(8, 8, (20, 120, 220)))},
                  headers={"X-CSRF-Token": b.me()["csrf_token"], **API})
    assert resp.status_code == 201, resp.text
    return resp.json()["name"]


def history(person, other):
    resp = person.browser.get(f"/chat/api/history?with={other.name}&limit=100", headers=API)
    assert resp.status_code == 200
    return resp.json()["messages"]


def upload_limit(stack):
    return int(stack.env.get("MEDIA_MAX_UPLOAD_BYTES", FilesConfig.MEDIA_MAX_UPLOAD_BYTES))


RANGE_FETCH = """async (src) => {
  const r = await fetch(src, { headers: { Range: "bytes=0-9" } });
  const body = await r.arrayBuffer();
  return { status: r.status, range: r.headers.get("Content-Range"), type: r.headers.get("Content-Type"),
           length: body.byteLength };
}"""


# ---- the tests -------------------------------------------------------------------------------

def test_page_and_its_modules_load_without_errors(chat_page, chat_stack):
    """The page, its stylesheet and its four ES modules load with no console error, and
    nothing it asks for is missing (no 4xx/5xx, no failed request: the icon is inline, so there
    is no /favicon.ico to miss) or redirected (a round trip for nothing)."""
    alice = Person(chat_stack)
    first = chat_page(alice)
    seen, failed = [], []
    first.context.on("response", lambda r: seen.append((r.status, r.url)))
    first.context.on("requestfailed", lambda r: failed.append((r.failure, r.url)))
    page = chat_page(alice, context=first.context)  # a tab whose every request is seen
    page.wait_for_load_state("networkidle")  # the contacts, conversations and people asked for too
    loaded = page.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)")
    for part in ("chat.css", "chat/main.js", "chat/socket.js", "chat/view.js", "chat/api.js"):
        assert any(url.split("?")[0].endswith("/static/" + part) for url in loaded), (part, loaded)
    assert [(s, u) for s, u in seen if s >= 400] == []
    assert [(s, u) for s, u in seen if 300 <= s < 400 and "/media/" not in u] == []
    assert not failed
    assert not any(url.endswith("/favicon.ico") for _, url in seen)


def test_text_from_others_is_shown_as_text(chat_page, chat_stack):
    """Markup in someone else's message is shown as the characters typed: no element is
    created, no handler runs."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    texts = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>", "<b>bold</b> &amp; co"]
    sb = Sender(bob)
    for t in texts:
        sb.send(t, alice)
    sb.close()
    pa = chat_page(alice)
    open_conv(pa, bob)
    expect(pa.locator("#messages li.msg .text")).to_have_text(texts)
    assert pa.locator("#messages .text *").count() == 0
    assert pa.locator("#messages img, #messages script").count() == 0
    assert pa.evaluate("() => window.__xss") is None


def test_history_page_by_page_each_message_once_after_reload_and_in_a_second_tab(chat_page, chat_stack):
    """120 messages: the conversation opens on the newest 50; scrolling up and "Load older
    messages" bring the rest, each message once, in order; a reload and a second tab show
    exactly the same."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    sent = exchange(alice, bob, 120)
    pa = chat_page(alice)
    open_conv(pa, bob)
    load_all(pa, 120)
    first = shown(pa)
    # every message once, in order (alice's copy: her own with the ids of her acks, bob's with
    # ids of her clock)
    assert [m[1:] for m in first] == [m[1:] for m in sent] and len({m[0] for m in first}) == 120
    assert [m for m in first if m[1] == alice.name] == [m for m in sent if m[1] == alice.name]

    reload(pa)
    open_conv(pa, bob)
    load_all(pa, 120)
    assert shown(pa) == first

    tab = chat_page(alice, context=pa.context)
    open_conv(tab, bob)
    load_all(tab, 120)
    assert shown(tab) == first


def test_sender_avatar_time_and_states_up_to_read(chat_page, chat_stack):
    """Each message shows its sender with their picture (or their initial) and a <time> whose
    datetime is the message's ts; one's own message goes sending -> delivered (the other person
    is online) -> read when the other person opens the conversation."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    avatar = upload_avatar(alice)
    pa = chat_page(alice, init_script=PROBES)
    pb = chat_page(bob, init_script=PROBES)
    open_conv(pa, bob)
    send(pa, "hello bob")
    mine = message(pa, "hello bob")
    expect(mine).to_have_attribute("data-state", "delivered")
    expect(mine.locator(".state")).to_have_text("Delivered")

    open_conv(pb, alice)
    expect(mine).to_have_attribute("data-state", "read")
    expect(mine.locator(".state")).to_have_text("Read")
    states = pa.evaluate("() => window.__states['hello bob']")
    assert states[0] == "sending" and states[-1] == "read" and "delivered" in states, states

    send(pb, "hi alice")
    expect(message(pb, "hi alice")).to_have_attribute("data-state", "read")  # alice is looking
    for page in (pa, pb):
        expect(messages(page)).to_have_count(2)
        a, b = message(page, "hello bob"), message(page, "hi alice")
        expect(a.locator(".who")).to_have_text(alice.name)
        expect(a.locator("img.avatar")).to_have_attribute("src", f"/media/{avatar}")
        expect(b.locator(".who")).to_have_text(bob.name)
        expect(b.locator("span.avatar.initial")).to_have_text(bob.name[0].upper())
        page.wait_for_function("() => { const i = document.querySelector('#messages img.avatar');"
                               " return i && i.complete && i.naturalWidth === 8; }")
        for li in (a, b):
            ts = int(li.get_attribute("data-id").split("-")[0])  # an id is "<ts>-<seq>"
            assert li.locator("time").evaluate("t => Date.parse(t.dateTime)") == ts
    screenshot(pa, "desktop-conversation.png")


def test_typing_edits_and_deletions_reach_the_other_person_and_the_second_tab(chat_page, chat_stack):
    """Bob typing shows "<bob> is typing…" to alice (both her tabs) until expires_in runs out;
    alice's edit and deletion of her recent messages reach bob and her second tab, and are
    still there after a reload (from history); Escape cancels an edit."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    pa = chat_page(alice)
    tab = chat_page(alice, context=pa.context)
    pb = chat_page(bob)
    for page, other in ((pa, bob), (tab, bob), (pb, alice)):
        open_conv(page, other)

    pb.locator("#send-text").press_sequentially("I am wri")
    for page in (pa, tab):
        expect(page.locator("#typing")).to_have_text(f"{bob.name} is typing…")
    typing_seen = time.monotonic()

    # Meanwhile, alice: an edit cancelled with Escape, an edit, a deletion.
    send(pa, "keep me")
    click_now(message(pa, "keep me").locator("button.edit"))
    expect(pa.locator("#edit-note")).to_be_visible()
    expect(pa.locator("#send-text")).to_have_value("keep me")
    pa.press("#send-text", "Escape")
    expect(pa.locator("#edit-note")).to_be_hidden()
    expect(pa.locator("#send-text")).to_have_value("")
    send(pa, "first draft")
    click_now(message(pa, "first draft").locator("button.edit"))
    send(pa, "final text")
    expect(pa.locator("#edit-note")).to_be_hidden()
    send(pa, "oops")
    click_now(message(pa, "oops").locator("button.delete"))

    expect(pa.locator("#typing")).to_be_hidden(timeout=15_000)
    assert time.monotonic() - typing_seen > 3  # shown for expires_in (6 s), not just a moment
    expect(tab.locator("#typing")).to_be_hidden()

    def check(page):
        expect(page.locator("#messages li.msg .text")).to_have_text(
            ["keep me", "final text", "This message was deleted."])
        expect(message(page, "final text").locator(".edited")).to_have_text("(edited)")
        expect(message(page, "This message was deleted.")).to_have_class(re.compile(r"\bdeleted\b"))

    for page in (pa, tab, pb):
        check(page)
    reload(pb)
    open_conv(pb, alice)
    check(pb)
    reload(tab)
    open_conv(tab, bob)
    check(tab)


def test_unread_counts_agree_across_tabs(chat_page, chat_stack):
    """Unread badges per conversation are the same in two tabs of one person, counted once
    (history and the socket's replay of the same messages); reading in one tab clears the
    badge in the other, both ways, and a reload agrees."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    sb = Sender(bob)
    for i in range(3):
        sb.send(f"before {i}", alice)  # alice has never connected: replayed, and in the list
    pa = chat_page(alice)
    tab = chat_page(alice, context=pa.context)
    for page in (pa, tab):
        expect(badge(page, bob)).to_have_text("3")

    open_conv(pa, bob)
    expect(badge(pa, bob)).to_have_count(0)
    expect(badge(tab, bob)).to_have_count(0)

    pa.click("#rooms li[data-room='lobby']")
    for i in range(2):
        sb.send(f"later {i}", alice)
    for page in (pa, tab):
        expect(badge(page, bob)).to_have_text("2")
    open_conv(tab, bob)
    expect(badge(tab, bob)).to_have_count(0)
    expect(badge(pa, bob)).to_have_count(0)
    sb.close()

    reload(pa)
    expect(contact(pa, bob)).to_have_count(1)
    expect(badge(pa, bob)).to_have_count(0)


def test_notification_while_the_tab_is_hidden(chat_page, chat_stack):
    """With notifications allowed, a message that arrives while the tab is hidden creates a
    notification titled with the sender and showing the text; none while the tab is seen."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    pa = chat_page(alice, init_script=PROBES, permissions=["notifications"])
    expect(pa.locator("#notify-btn")).to_be_hidden()  # already allowed: nothing to ask
    sb = Sender(bob)
    sb.send("seen, no notification", alice)
    expect(badge(pa, bob)).to_have_text("1")
    pa.evaluate("() => window.__setHidden(true)")
    sb.send("are you there?", alice)
    expect(badge(pa, bob)).to_have_text("2")
    pa.wait_for_function("() => window.__notes.length > 0")
    assert pa.evaluate("() => window.__notes") == [{"title": bob.name, "body": "are you there?"}]
    sb.close()


def test_new_people_appear_in_contacts_without_a_reload_with_online_dots(chat_page, chat_stack):
    """Someone who registers after the page loaded appears in the contacts when the tab comes
    back (visibilitychange re-reads the users), with a dot that follows their presence."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    sb = bob.connect()
    pa = chat_page(alice, init_script=PROBES)
    expect(contact(pa, bob)).to_have_class(ONLINE)
    carol = Person(chat_stack)
    expect(contact(pa, carol)).to_have_count(0)
    pa.evaluate("() => { window.__setHidden(true); window.__setHidden(false); }")
    expect(contact(pa, carol)).to_have_count(1)
    expect(contact(pa, carol)).not_to_have_class(ONLINE)
    sc = carol.connect()
    expect(contact(pa, carol)).to_have_class(ONLINE)
    sc.close()
    sb.close()
    expect(contact(pa, carol)).not_to_have_class(ONLINE)
    expect(contact(pa, bob)).not_to_have_class(ONLINE)


def test_a_rooms_member_list_follows_joins_and_leaves_without_a_reload(chat_page, chat_stack):
    """A room shows its members; someone who joins (from anywhere) appears, with their dot,
    and goes when they leave; a member opens a private conversation with them."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    room = "club-" + uuid.uuid4().hex[:6]
    sb = bob.connect()
    sb.send(type="join", room=room, cid="j")
    sb.expect("room", cid="j")
    pa = chat_page(alice)
    pa.fill("#join-name", room)
    pa.press("#join-name", "Enter")
    expect(pa.locator("#conv-title")).to_have_text("Room " + room)
    members = pa.locator("#members li")
    expect(pa.locator("#members-count")).to_have_text("2")
    expect(pa.locator(f"#members li[data-member='{bob.name}']")).to_have_class(ONLINE)
    carol = Person(chat_stack)
    sc = carol.connect()
    sc.send(type="join", room=room, cid="j")
    sc.expect("room", cid="j")
    expect(members).to_have_count(3)
    expect(pa.locator(f"#members li[data-member='{carol.name}']")).to_have_class(ONLINE)
    sc.send(type="leave", room=room, cid="l")
    sc.expect("room", cid="l")
    expect(members).to_have_count(2)
    pa.locator("#members-box summary").click()
    pa.click(f"#members li[data-member='{bob.name}']")
    expect(pa.locator("#conv-title")).to_have_text(bob.name)
    expect(pa.locator("#members-box")).to_be_hidden()
    sb.close()
    sc.close()


def test_sharing_a_picture_audio_and_video_and_refused_files(chat_page, chat_stack, tmp_path):
    """A picture, an MP3 and an MP4 are uploaded with a progress bar and shown to both people:
    the picture inline, the others in <audio controls>/<video controls> whose source answers a
    Range request with 206.  A file over the upload limit and a file whose content is not what
    its name says get a clear notice, and nothing is sent."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    # Chromium logs every 4xx answer to a request; the two refusals below are expected.
    chat_page.allow(r"Failed to load resource: the server responded with a status of 41[35] ")
    pa = chat_page(alice)
    pb = chat_page(bob)
    open_conv(pa, bob)
    open_conv(pb, alice)

    held = []
    pa.route(re.compile(r"/media/$"), lambda route: held.append(route) if route.request.method == "POST"
             else route.continue_())
    pa.set_input_files("#send-file", files=[{"name": "cat.png", "mimeType": "image/png", "buffer": tiny_png(6, 4)}])
    pa.press("#send-text", "Enter")
    expect(pa.locator("#upload-progress")).to_be_visible()  # while the upload is held
    while not held:
        pa.wait_for_timeout(20)
    held[0].continue_()
    expect(pa.locator("#upload-progress")).to_be_hidden()
    pa.unroute(re.compile(r"/media/$"))
    for name in ("song.mp3", "clip.mp4"):
        data, mime = SAMPLES[name]
        pa.set_input_files("#send-file", files=[{"name": name, "mimeType": mime, "buffer": data}])
        pa.press("#send-text", "Enter")
        expect(message(pa, name)).to_have_count(1)

    for page in (pa, pb):
        expect(messages(page)).to_have_count(3)
        expect(message(page, "cat.png").locator("img.media")).to_have_count(1)
        page.wait_for_function("() => { const i = document.querySelector('#messages img.media');"
                               " return i && i.complete && i.naturalWidth === 6; }")
        for name, tag, mime in (("song.mp3", "audio", "audio/mpeg"), ("clip.mp4", "video", "video/mp4")):
            player = message(page, name).locator(f"{tag}.media[controls]")
            expect(player).to_have_count(1)
            got = page.evaluate(RANGE_FETCH, player.evaluate("m => m.src"))
            assert got["status"] == 206 and got["length"] == 10, got
            assert got["range"].startswith("bytes 0-9/") and got["type"] == mime, got

    limit = upload_limit(chat_stack)
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (limit + 1))
    pa.set_input_files("#send-file", str(big))
    pa.press("#send-text", "Enter")
    expect(pa.locator("#notice")).to_contain_text(re.compile(r"larger than the limit|too large"), timeout=30_000)
    expect(pa.locator("#upload-progress")).to_be_hidden()
    pa.set_input_files("#send-file", files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"just text"}])
    pa.press("#send-text", "Enter")
    expect(pa.locator("#notice")).to_contain_text("named like a PNG image but its content is not one")
    send(pa, "after the refused files")
    for page in (pa, pb):
        expect(messages(page).last).to_contain_text("after the refused files")
        expect(messages(page)).to_have_count(4)
    assert [m["data"] for m in history(bob, alice)] == ["cat.png", "song.mp3", "clip.mp4", "after the refused files"]


def test_phone_screens_switch_like_an_app_without_sideways_scrolling(chat_page, chat_stack):
    """At 390x844 (and 360 and 430 wide) the page never scrolls sideways; the conversations and
    one conversation take turns (#chat[data-view]) with the send box on screen; Enter sends,
    Escape and the back button go back to the list."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    sa = Sender(alice)
    sa.send("a long word: " + "x" * 300, bob)
    sa.send("https://example.com/" + "very-long-path/" * 30, bob)
    sa.close()
    pb = chat_page(bob, viewport=PHONES[0])
    root = pb.locator("#chat")
    for size in PHONES:
        pb.set_viewport_size(size)
        expect(root).to_have_attribute("data-view", "list")
        expect(contact(pb, alice)).to_be_visible()
        expect(pb.locator("#send-form")).to_be_hidden()
        no_horizontal_overflow(pb)
        if size is PHONES[0]:
            screenshot(pb, "phone-list.png")
        open_conv(pb, alice)
        expect(contact(pb, alice)).to_be_hidden()
        expect(pb.locator("#send-text")).to_be_in_viewport()
        expect(pb.locator("#send-form button[type=submit]")).to_be_in_viewport()
        send(pb, f"from a phone {size['width']} wide")
        mine = message(pb, f"from a phone {size['width']} wide")
        expect(mine).to_be_in_viewport()
        expect(mine).to_have_attribute("data-state", "sent")  # alice is away: not delivered yet
        expect(pb.locator("#load-older")).to_be_hidden()  # nothing older than these
        no_horizontal_overflow(pb)
        if size is PHONES[0]:
            screenshot(pb, "phone-conversation.png")
            pb.set_viewport_size({"width": size["width"], "height": 520})  # the keyboard opens
            expect(mine).to_be_in_viewport()
            expect(pb.locator("#send-text")).to_be_in_viewport()
            pb.click("#back")
        else:
            pb.press("#send-text", "Escape")
    expect(root).to_have_attribute("data-view", "list")


def test_reconnecting_banner_and_no_lost_or_doubled_message(chat_page, chat_stack):
    """When the page's chat process dies, a "Reconnecting…" banner shows until the socket is
    back; what bob sent meanwhile and what alice sent meanwhile (held, then sent) each arrive
    once, in order."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    chat_page.allow(r"WebSocket connection to '.*' failed")  # the handshakes tried while it is down
    pa = chat_page(alice)
    node = pa.locator("#chat").get_attribute("data-node")
    sb = Sender(bob, not_on=node)  # bob's socket stays up
    sb.send("before", alice)
    open_conv(pa, bob)
    expect(messages(pa)).to_have_count(1)
    expect(pa.locator("#conn-banner")).to_be_hidden()

    os.kill(int(node.split("-")[-2]), signal.SIGKILL)  # no close frame: the socket just dies
    expect(pa.locator("#conn-banner")).to_be_visible()
    expect(pa.locator("#conn-banner")).to_contain_text("Reconnecting")
    for i in range(3):
        sb.send(f"while down {i}", alice)
    send(pa, "alice while down")
    expect(message(pa, "alice while down")).to_have_attribute("data-state", "sending")

    expect(pa.locator("#conn-banner")).to_be_hidden(timeout=20_000)
    expect(message(pa, "alice while down")).not_to_have_attribute("data-state", "sending")
    sb.send("after", alice)
    expected = ["before", "while down 0", "while down 1", "while down 2", "alice while down", "after"]
    expect(pa.locator("#messages li.msg .text")).to_have_text(expected)
    assert [m["data"] for m in history(bob, alice)] == expected
    sb.close()

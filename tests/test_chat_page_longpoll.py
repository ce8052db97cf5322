"""The chat page where WebSockets cannot open (headless Chromium): it long-polls by itself, the
person notices nothing but a note in the status line, and it goes back to a WebSocket when one
opens again."""
import re

import pytest
from playwright.sync_api import expect

from support.chat import Person, Poller

pytestmark = pytest.mark.timeout(120)
ONLINE = re.compile(r"\bonline\b")
POLLING = re.compile(r"long-polling")

#: A browser without WebSockets.
NO_WEBSOCKET = "delete window.WebSocket;"

#: A network that breaks WebSocket upgrades until the test lets them through
#: (``window.blockWebSockets = false``): every socket opened meanwhile fails as a refused
#: upgrade does (the page sees a close with code 1006), and counts in ``window.socketsOpened``.
BLOCKED_UNTIL_LET_THROUGH = """
(() => {
  const Real = window.WebSocket;
  window.blockWebSockets = true;
  window.socketsOpened = 0;
  function Gated(url, protocols) {
    if (window.blockWebSockets) return new Real("ws://" + location.host + "/chat-blocked/");
    const ws = new Real(url, protocols);
    ws.addEventListener("open", () => { window.socketsOpened += 1; });
    return ws;
  }
  Gated.prototype = Real.prototype;
  Object.assign(Gated, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Gated;
})();
"""


def send(page, text):
    page.fill("#send-text", text)
    page.click("#send-form button")


def test_the_page_long_polls_where_websockets_are_unavailable(chat_page, chat_stack):
    alice, bob = Person(chat_stack), Person(chat_stack)
    pa = chat_page(alice, init_script=NO_WEBSOCKET)
    expect(pa.locator("#chat-status")).to_have_text(POLLING)
    pb = chat_page(bob)
    expect(pb.locator("#chat-status")).not_to_have_text(POLLING)
    # presence both ways: the polling page is online, and is told who is
    expect(pa.locator(f"#contacts li[data-user='{bob.name}']")).to_have_class(ONLINE)
    expect(pb.locator(f"#contacts li[data-user='{alice.name}']")).to_have_class(ONLINE)

    pa.click(f"#contacts li[data-user='{bob.name}']")
    send(pa, "sent over http")
    mine = pa.locator("#messages li.mine")
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-state", re.compile("sent|delivered|read"))
    pb.click(f"#contacts li[data-user='{alice.name}']")
    expect(pb.locator("#messages li .text")).to_have_text("sent over http")
    send(pb, "and back over the socket")
    expect(pa.locator("#messages li .text", has_text="and back over the socket")).to_have_count(1)
    # bob read it: alice's message shows read (a read frame through her poll)
    expect(mine).to_have_attribute("data-state", "read")

    # a room joined from the polling page, and a message to it from the socket page
    pa.fill("#join-name", "pollers")
    pa.click("#join-form button")
    expect(pa.locator("#rooms li[data-room='pollers']")).to_have_count(1)
    pb.fill("#join-name", "pollers")
    pb.click("#join-form button")
    expect(pb.locator("#rooms li[data-room='pollers']")).to_have_count(1)
    send(pb, "to the pollers")
    pa.click("#rooms li[data-room='pollers']")
    expect(pa.locator("#messages li .text", has_text="to the pollers")).to_have_count(1)

    # the polling page closing shows as offline (its client is gone after the grace period)
    pa.close()
    expect(pb.locator(f"#contacts li[data-user='{alice.name}']")).not_to_have_class(ONLINE, timeout=15_000)


def test_the_page_goes_back_to_a_websocket_when_one_opens(chat_page, chat_stack):
    alice, bob = Person(chat_stack), Person(chat_stack)
    chat_page.allow(r"WebSocket connection to '\S+/chat-blocked/' failed")
    pa = chat_page(alice, init_script=BLOCKED_UNTIL_LET_THROUGH)
    expect(pa.locator("#chat-status")).to_have_text(POLLING)
    pb = Poller(bob)  # (a socket left unread this long would miss its pings)
    pb.poll()
    pb.send(type="message", receiver=alice.name, data="while polling", cid="p1")
    pa.click(f"#contacts li[data-user='{bob.name}']")
    expect(pa.locator("#messages li .text", has_text="while polling")).to_have_count(1)

    pa.evaluate("window.blockWebSockets = false")
    expect(pa.locator("#chat-status")).not_to_have_text(POLLING, timeout=30_000)
    expect(pa.locator("#chat-status")).to_have_attribute("data-state", "online")
    assert pa.evaluate("window.socketsOpened") == 1
    pb.send(type="message", receiver=alice.name, data="over the socket again", cid="p2")
    expect(pa.locator("#messages li .text", has_text="over the socket again")).to_have_count(1)
    send(pa, "answered over the socket")
    assert pb.until("message", data="answered over the socket")["sender"] == alice.name
    # nothing shown twice across the switch
    expect(pa.locator("#messages li .text", has_text="while polling")).to_have_count(1)

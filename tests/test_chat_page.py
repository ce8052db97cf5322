"""The chat page in a real browser (headless Chromium via Playwright) against the chat test
stack: contacts with presence, a private conversation, the offline notice, and the automatic
reconnect that resumes from its positions (the private one and each room's) after the
browser's chat process is killed."""
import os
import re
import signal
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from support.web import tiny_png
from support.chat import Person

pytestmark = pytest.mark.timeout(120)
ONLINE = re.compile(r"\bonline\b")


def test_private_chat_presence_and_offline_notice_in_the_browser(chat_page, chat_stack):
    alice, bob, carol = Person(chat_stack), Person(chat_stack), Person(chat_stack)
    pa = chat_page(alice)
    pb = chat_page(bob)
    # alice sees bob online (presence pushed to an open page), and carol (registered, offline)
    expect(pa.locator(f"#contacts li[data-user='{bob.name}']")).to_have_class(ONLINE)
    expect(pa.locator(f"#contacts li[data-user='{carol.name}']")).not_to_have_class(ONLINE)

    pa.click(f"#contacts li[data-user='{bob.name}']")
    pa.fill("#send-text", "hello <b>bob</b> from a browser")
    pa.click("#send-form button")
    mine = pa.locator("#messages li.mine")
    expect(mine).to_have_count(1)
    expect(mine).not_to_have_class("pending")  # acked
    # bob: an unread badge on alice, then the conversation (text, not HTML)
    expect(pb.locator(f"#contacts li[data-user='{alice.name}'] .unread")).to_have_text("1")
    pb.click(f"#contacts li[data-user='{alice.name}']")
    expect(pb.locator("#messages li .text")).to_have_text("hello <b>bob</b> from a browser")
    assert pb.locator("#messages li b").count() == 0

    # the tutorial's offline notice, and carol gets the message when she comes
    pa.click(f"#contacts li[data-user='{carol.name}']")
    pa.fill("#send-text", "see you later")
    pa.click("#send-form button")
    expect(pa.locator("#messages li.system")).to_contain_text("receiver is offline")
    pc = chat_page(carol)
    expect(pc.locator(f"#contacts li[data-user='{alice.name}'] .unread")).to_have_text("1")

    # rooms: bob joins one; alice's lobby message reaches bob's lobby view
    pb.fill("#join-name", "browsers")
    pb.click("#join-form button")
    expect(pb.locator("#rooms li[data-room='browsers']")).to_have_count(1)
    pa.click("#rooms li[data-room='lobby']")
    pa.fill("#send-text", "hi lobby")
    pa.click("#send-form button")
    pb.click("#rooms li[data-room='lobby']")
    expect(pb.locator("#messages li", has_text="hi lobby")).to_have_count(1)

    # a picture: uploaded by alice's page, shown in bob's (his own signed link)
    pa.click(f"#contacts li[data-user='{bob.name}']")
    pa.set_input_files("#send-file", files=[{"name": "cat.png", "mimeType": "image/png", "buffer": tiny_png(1, 1)}])
    pa.fill("#send-text", "a cat")
    pa.click("#send-form button")
    expect(pa.locator("#messages li.mine img.media")).to_have_count(1)
    pb.click(f"#contacts li[data-user='{alice.name}']")
    img = pb.locator("#messages li img.media")
    expect(img).to_have_count(1)
    pb.wait_for_function("() => { const i = document.querySelector('#messages li img.media');"
                         " return i && i.complete && i.naturalWidth === 1; }")

    # someone who registered after alice's page loaded its contacts: watched once they write
    dave = Person(chat_stack)
    sd = dave.connect()
    sd.send(receiver=alice.name, data="new here")
    expect(pa.locator(f"#contacts li[data-user='{dave.name}']")).to_have_class(ONLINE)
    sd.close()
    expect(pa.locator(f"#contacts li[data-user='{dave.name}']")).not_to_have_class(ONLINE)
    # and bob closing his page shows as offline
    pb.close()
    expect(pa.locator(f"#contacts li[data-user='{bob.name}']")).not_to_have_class(ONLINE)


def test_page_reconnects_and_resumes_after_its_process_dies(chat_page, chat_stack):
    alice, bob = Person(chat_stack), Person(chat_stack)
    pb = chat_page(bob)
    node = pb.locator("#chat").get_attribute("data-node")
    sa = alice.connect_not_on(node)
    sa.send(receiver=bob.name, data="one")
    sa.expect("ack")
    pb.click(f"#contacts li[data-user='{alice.name}']")
    expect(pb.locator("#messages li")).to_have_count(1)

    os.kill(int(node.split("-")[-2]), signal.SIGKILL)  # bob's chat process dies: no close frame
    expect(pb.locator("#chat-status")).not_to_have_attribute("data-state", "online")
    sa.send(receiver=bob.name, data="two")  # while bob's page is reconnecting
    sa.expect("ack")
    expect(pb.locator("#chat-status")).to_have_attribute("data-state", "online", timeout=20_000)
    assert pb.locator("#chat").get_attribute("data-node") != node
    expect(pb.locator("#messages li")).to_have_count(2)  # "two" once, "one" not again
    expect(pb.locator("#messages li").nth(1)).to_contain_text("two")
    sa.send(receiver=bob.name, data="three")
    expect(pb.locator("#messages li")).to_have_count(3)
    time.sleep(0.5)
    expect(pb.locator("#messages li")).to_have_count(3)
    sa.close()


def test_page_resumes_each_room_from_its_own_position(chat_page, chat_stack):
    """The page keeps a position per room (and one for its private messages): when its process
    dies it reconnects with ``rooms=<room>:<id>,...`` naming each of its rooms at the last id
    it saw there (or the one ``sync`` named), and a room message sent meanwhile shows once."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    room = "pg" + uuid.uuid4().hex[:8]
    sb = bob.connect()
    sb.send(type="join", room=room, cid="j")
    sb.expect("room", cid="j")
    default = sb.hello["default_room"]
    sb.close()
    pb = chat_page(bob)
    urls = []
    pb.on("websocket", lambda ws: urls.append(ws.url))
    node = pb.locator("#chat").get_attribute("data-node")
    sa = alice.connect_not_on(node)
    sa.send(type="join", room=room, cid="j")
    sa.expect("room", cid="j")
    sa.send(room=room, data="one", cid="one")
    one = sa.expect("ack", cid="one")["id"]
    pb.click(f"#rooms li[data-room='{room}']")
    expect(pb.locator("#messages li.msg")).to_have_count(1)

    os.kill(int(node.split("-")[-2]), signal.SIGKILL)
    expect(pb.locator("#chat-status")).not_to_have_attribute("data-state", "online")
    sa.send(room=room, data="two", cid="two")
    sa.expect("ack", cid="two")
    expect(pb.locator("#chat-status")).to_have_attribute("data-state", "online", timeout=20_000)
    expect(pb.locator("#messages li.msg")).to_have_count(2)
    expect(pb.locator("#messages li.msg").nth(1)).to_contain_text("two")
    query = parse_qs(urlsplit(urls[-1]).query)
    positions = dict(part.split(":") for part in query["rooms"][0].split(","))
    assert set(positions) == {room, default} and positions[room] == one
    time.sleep(0.5)
    expect(pb.locator("#messages li.msg")).to_have_count(2)
    sa.close()

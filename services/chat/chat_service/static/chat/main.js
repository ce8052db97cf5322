// The chat page: conversations (private and rooms) with their history, kept in step with every
// tab and device of the person through the WebSocket (or long-polling where WebSockets are blocked).
// - history comes page by page from /chat/api/history (scroll up for older), the list with
//   unread counts from /chat/api/conversations; live frames are merged by id, so a replay after
//   a reconnect never shows a message twice;
// - our own messages go sending -> sent -> delivered -> read (the ack, then the other person's
//   "read" frame); recent ones can be edited or deleted;
// - typing notices, presence of the people shown, notifications while the tab is hidden;
// - files are uploaded with a progress bar and sent as a message carrying their name.
import { getJSON, upload } from "./api.js";
import { ChatSocket, cmpId } from "./socket.js";
import * as view from "./view.js";

const root = document.getElementById("chat");
const me = root.dataset.user;
const defaultRoom = root.dataset.defaultRoom;
const $ = (id) => document.getElementById(id);

const convs = new Map();        // key ("@name" or "#room") -> conversation
const pending = new Map();      // cid -> {key, item, frame}: sent, not yet stored
const people = {};              // lower(name) -> {avatar}
const asked = new Set();        // names already asked of /chat/api/people
let rooms = new Set([defaultRoom]);
let contacts = [];
let online = new Set();
let current = "#" + defaultRoom;
let limits = {};
let cidSeq = 0;
let editing = null;             // {key, id} while the send box edits a message
let typingSent = 0;
let watchSent = null;
let watchTimer = null;
let joining = null;             // the room this page asked to join: opened once the server says so
let pinned = true;              // the message list shows its end: kept there as it grows or resizes

const socket = new ChatSocket(me, { onFrame, onState, onRefused: notice });

// ---- conversations ---------------------------------------------------------------------------

function conv(key) {
  let c = convs.get(key);
  if (!c) {
    c = { key, items: [], ids: new Set(), unread: 0, countedUpTo: null, readUpTo: null, peerRead: null,
          more: true, loaded: false, loading: null, last: null, typing: null };
    convs.set(key, c);
    if (key.charAt(0) === "@") scheduleWatch();
  }
  return c;
}

const isRoom = (key) => key.charAt(0) === "#";
const where = (key) => (isRoom(key) ? { room: key.slice(1) } : { with: key.slice(1) });
const keyOfMessage = (m) => (m.room ? "#" + m.room : "@" + (m.sender === me ? m.receiver : m.sender));
const maxId = (a, b) => (!a ? b : !b ? a : cmpId(a, b) >= 0 ? a : b);

function itemOf(m, state) {
  return { id: m.id, ts: m.ts, sender: m.sender, data: m.data, media: m.media, cid: m.cid,
           edited: m.edited, deleted: m.deleted, state: m.sender === me ? (state || "sent") : undefined };
}

// Keep items in id order (those still sending last); an id already there is not added again.
function insert(c, item) {
  if (item.id) {
    if (c.ids.has(item.id)) return false;
    c.ids.add(item.id);
    let i = c.items.length;
    while (i > 0 && (!c.items[i - 1].id || cmpId(c.items[i - 1].id, item.id) > 0)) i -= 1;
    c.items.splice(i, 0, item);
  } else {
    c.items.push(item);
  }
  if (!item.system && item.id && (!c.last || cmpId(item.id, c.last.id) > 0)) c.last = item;
  return true;
}

function find(c, id) { return c.items.find((it) => it.id === id); }

async function loadHistory(c, older) {
  if (c.loading) return c.loading;
  const params = new URLSearchParams(where(c.key));
  params.set("limit", "50");
  const first = c.items.find((it) => it.id);
  if (older && first) params.set("before", first.id);
  c.loading = getJSON("/chat/api/history?" + params).then((body) => {
    body.messages.forEach((m) => insert(c, itemOf(m)));
    c.more = body.more;
    c.loaded = true;
    const read = body.read || {};
    c.readUpTo = maxId(c.readUpTo, read[me]);
    if (!isRoom(c.key)) c.peerRead = maxId(c.peerRead, read[body.with]);
    askPeople(body.messages.map((m) => m.sender));
  }).catch(() => notice("Could not load the conversation's history: try again.")).finally(() => { c.loading = null; });
  return c.loading;
}

async function loadConversations() {
  try {
    const body = await getJSON("/chat/api/conversations");
    body.conversations.forEach((it) => {
      const c = conv(it.room ? "#" + it.room : "@" + it.with);
      c.unread = it.unread;
      c.readUpTo = it.read_up_to;
      if (it.last) { c.last = itemOf(it.last); c.countedUpTo = it.last.id; }
      if (it.room) rooms.add(it.room);
    });
  } catch (e) { /* the socket still brings everything new */ }
}

// The person read what is shown: tell the server (every tab and device updates its count).
function markRead(c) {
  const last = [...c.items].reverse().find((it) => it.id && !it.system);
  if (!last) return;
  if (!c.readUpTo || cmpId(last.id, c.readUpTo) > 0) {
    c.readUpTo = last.id;
    socket.send({ type: "read", ...where(c.key), up_to: last.id });
  }
  c.unread = 0;
}

// ---- frames ----------------------------------------------------------------------------------

function onFrame(f) {
  if (f.id && (f.type === "message" || f.type === "edit" || f.type === "delete")) socket.saw(f);
  switch (f.type) {
    case "hello":
      root.dataset.node = f.node;  // which chat process serves us (shown for support and tests)
      rooms = new Set(f.rooms || [defaultRoom]);
      socket.inRooms(rooms);
      limits = f.limits || {};
      watchSent = null;
      sendWatch();
      break;
    case "sync":
      if (f.gap) notice("Some older messages could not be replayed.");
      // Sent but never acknowledged: maybe stored, maybe not; the same cid is stored once.
      pending.forEach((p) => socket.send(p.frame));
      break;
    case "message": onMessage(f); break;
    case "ack": onAck(f); break;
    case "edit":
    case "delete": onChange(f); break;
    case "read": onRead(f); break;
    case "typing": onTyping(f); return;
    case "system":
      if (f.code === "offline" && f.about) {
        const c = conv("@" + f.about);
        const it = f.id && find(c, f.id);
        if (it && it.state !== "read") it.state = "sent";
        insert(c, { system: true, data: f.about + ": " + f.data });
      } else if (f.data) notice(f.data);
      break;
    case "watching": online = new Set(f.online || []); break;
    case "presence": if (f.online) online.add(f.user); else online.delete(f.user); break;
    case "room":
      if (f.action === "join") {
        rooms.add(f.room);
        // Opened only now: its history is refused (403) until the server has made us a member.
        if (joining && joining.toLowerCase() === f.room.toLowerCase()) { joining = null; openConv("#" + f.room); }
      } else { rooms.delete(f.room); if (current === "#" + f.room) current = "#" + defaultRoom; }
      break;
    case "member": {
      // someone joined or left a room we are in: its member list follows
      const c = conv("#" + f.room);
      if (c.members) {
        if (f.action === "join") c.members.add(f.user); else c.members.delete(f.user);
        scheduleWatch();
      }
      break;
    }
    case "error": onError(f); break;
    default: return;
  }
  render();
}

function onMessage(m) {
  const key = keyOfMessage(m);
  const c = conv(key);
  const p = m.sender === me && m.cid !== undefined ? pending.get(m.cid) : null;
  if (p && p.key === key) {
    // our own, sent from this page: it is stored (its ack may come before or after this)
    pending.delete(m.cid);
    c.items.splice(c.items.indexOf(p.item), 1);
    p.item.id = m.id; p.item.ts = m.ts;
    if (p.item.state === "sending") p.item.state = "sent";
    insert(c, p.item);
    return;
  }
  if (!insert(c, itemOf(m))) return;
  askPeople([m.sender]);
  if (c.typing && c.typing.user === m.sender) c.typing = null;
  if (m.sender === me) return;
  const counted = c.countedUpTo && cmpId(m.id, c.countedUpTo) <= 0;
  if (key === current && c.loaded && !document.hidden && viewing()) markRead(c);
  else if (!counted && !(c.readUpTo && cmpId(m.id, c.readUpTo) <= 0)) c.unread += 1;
  if (document.hidden) notify(m);
}

function onAck(f) {
  if (f.target) return;  // an edit or delete: its own frame updates the message
  const p = pending.get(f.cid);
  let item = p ? p.item : null;
  if (!item) {  // our own message arrived first: find it by id
    const key = f.room ? "#" + f.room : "@" + f.receiver;
    item = find(conv(key), f.id);
  } else {
    pending.delete(f.cid);
    const c = conv(p.key);
    c.items.splice(c.items.indexOf(item), 1);
    item.id = f.id; item.ts = f.ts;
    insert(c, item);
  }
  if (item && item.state !== "read") item.state = f.room || !f.delivered ? "sent" : "delivered";
}

function onChange(f) {
  const m = f.message;
  const c = conv(keyOfMessage(m));
  const it = find(c, f.target);
  if (!it) return;
  it.data = m.data; it.media = m.media; it.edited = m.edited; it.deleted = m.deleted;
  if (editing && editing.id === f.target && m.deleted) stopEditing();
}

function onRead(f) {
  if (f.user === me) {
    const c = conv(f.room ? "#" + f.room : "@" + f.with);
    c.readUpTo = maxId(c.readUpTo, f.up_to);
    if (typeof f.unread === "number") {
      c.unread = f.unread;
      c.countedUpTo = maxId(c.countedUpTo, c.last && c.last.id);
    }
  } else {
    const c = conv("@" + f.user);
    c.peerRead = maxId(c.peerRead, f.up_to);
  }
}

function onTyping(f) {
  if (f.user === me) return;
  const c = conv(f.room ? "#" + f.room : "@" + f.with);
  c.typing = { user: f.user, until: Date.now() + (f.expires_in || 5) * 1000 };
  renderTyping();
  setTimeout(renderTyping, (f.expires_in || 5) * 1000 + 50);
}

function onError(f) {
  if (f.cid === "join") joining = null;
  if (f.cid === "watch") {
    // Not watched (the store was unavailable, or too many frames): try again shortly.
    watchSent = null;
    if (!watchTimer) watchTimer = setTimeout(sendWatch, 3000 * (0.5 + Math.random()));
    return;
  }
  const p = f.cid !== undefined ? pending.get(f.cid) : null;
  if (p && f.code === "unavailable") {
    // Maybe stored, maybe not: send it again shortly with the same cid (stored once).
    setTimeout(() => { if (pending.has(f.cid)) socket.send(p.frame); }, 2000 * (0.5 + Math.random()));
    return;
  }
  notice(f.error);
  if (p) {
    pending.delete(f.cid);
    p.item.state = "failed";
    p.item.data += "  (not sent: " + f.error + ")";
  }
}

// ---- sending ---------------------------------------------------------------------------------

function sendMessage(text, mediaName) {
  const cid = "c" + (++cidSeq) + "-" + Date.now();
  const frame = { data: text, cid };
  if (mediaName) frame.media = mediaName;
  if (isRoom(current)) frame.room = current.slice(1); else frame.receiver = current.slice(1);
  // Not connected: it waits, shown as sending, and goes when the connection is back (on "sync").
  socket.send(frame);
  notice("");
  const item = { sender: me, data: text, media: mediaName, cid, state: "sending", ts: Date.now() };
  pending.set(cid, { key: current, item, frame });
  insert(conv(current), item);
  renderLists();
  renderMessages(false, true);  // one's own message is always shown
}

async function sendFile(file, caption) {
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  notice("Uploading " + file.name + "…");
  try {
    const stored = await upload(file, (share) => { bar.value = Math.round(share * 100); });
    notice("");
    sendMessage(caption || stored.original_name || stored.name, stored.name);
  } catch (err) {
    notice(err.message);
  } finally {
    bar.hidden = true;
  }
}

function startEditing(id) {
  const it = find(conv(current), id);
  if (!it) return;
  editing = { key: current, id };
  $("send-text").value = it.data;
  $("send-form").dataset.editing = id;
  $("edit-note").hidden = false;
  $("send-text").focus();
}

function stopEditing() {
  editing = null;
  delete $("send-form").dataset.editing;
  $("edit-note").hidden = true;
  $("send-text").value = "";
}

// Offered until a little before the server's window closes (5 s, or a quarter of a short window).
const editable = (it) => {
  const windowMs = (limits.edit_window || 900) * 1000;
  return Date.now() - it.ts < windowMs - Math.min(5000, windowMs / 4);
};

// ---- people and presence ---------------------------------------------------------------------

// Whose presence we are sent: conversations first, then contacts, up to the server's limit.
function sendWatch() {
  watchTimer = null;
  if (!socket.open || !limits.watch) return;
  const names = new Set();
  convs.forEach((c, k) => { if (!isRoom(k)) names.add(k.slice(1)); });
  if (isRoom(current) && conv(current).members) conv(current).members.forEach((n) => names.add(n));
  contacts.forEach((n) => names.add(n));
  names.delete(me);
  const list = [...names].slice(0, limits.watch);
  const json = JSON.stringify(list);
  if (json === watchSent) return;
  watchSent = json;
  socket.send({ type: "watch", users: list, cid: "watch" });
}

function scheduleWatch() { if (!watchTimer) watchTimer = setTimeout(sendWatch, 200); }

// Avatars of the people shown, asked once each, 100 at a time.
function askPeople(names) {
  const fresh = [...new Set(names)].filter((n) => n && !asked.has(n.toLowerCase()));
  if (!fresh.length) return;
  fresh.forEach((n) => asked.add(n.toLowerCase()));
  for (let i = 0; i < fresh.length; i += 100) {
    const q = new URLSearchParams();
    fresh.slice(i, i + 100).forEach((n) => q.append("name", n));
    getJSON("/chat/api/people?" + q).then((body) => {
      Object.entries(body.people).forEach(([name, p]) => { people[name.toLowerCase()] = p; });
      renderMessages();
    }).catch(() => { /* initials instead */ });
  }
}

// Contacts: the registered users, 50 a page (auth's /api/users), up to 40 pages; read again
// every minute and when the tab comes back, so people who registered since appear.
async function loadContacts() {
  const all = [];
  for (let page = 1; page <= 40; page += 1) {
    let users;
    // (page 1 is /api/users: auth redirects /api/users/page/1 there)
    const path = page === 1 ? "/api/users" : "/api/users/page/" + page;
    try { users = (await getJSON(path)).users || []; } catch (e) { break; }
    all.push(...users);
    if (users.length < 50) break;
  }
  contacts = all;
  askPeople(all);
  scheduleWatch();
  renderLists();
}

function notify(m) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const n = new Notification(m.room ? m.sender + " in #" + m.room : m.sender,
                             { body: m.media ? "sent a file" : m.data, tag: keyOfMessage(m) });
  n.onclick = () => { window.focus(); openConv(keyOfMessage(m)); n.close(); };
}

// ---- rendering -------------------------------------------------------------------------------

function notice(text) { $("notice").textContent = text || ""; }

function onState(state, reason) {
  const status = $("chat-status");
  status.dataset.state = state;
  status.textContent = { connecting: "connecting…", online: "connected", reconnecting: "reconnecting…" }[state] +
    (reason ? " (" + reason + ")" : "");
  $("conn-banner").hidden = state !== "reconnecting";
}

const viewing = () => root.dataset.view !== "list" || window.matchMedia("(min-width: 641px)").matches;

function render() { renderLists(); renderMessages(); }

function renderLists() {
  const rl = $("rooms");
  rl.replaceChildren(...[...rooms].sort().map((r) => {
    const key = "#" + r;
    return view.entry("#" + r, { active: current === key, unread: conv(key).unread, attrs: { room: r, key } });
  }));
  const names = new Set(contacts);
  convs.forEach((c, k) => { if (!isRoom(k)) names.add(k.slice(1)); });
  names.delete(me);
  const lastOf = (n) => (convs.has("@" + n) && convs.get("@" + n).last ? convs.get("@" + n).last.id : "");
  const sorted = [...names].sort((a, b) => {
    const la = lastOf(a), lb = lastOf(b);
    if (la !== lb) return !la ? 1 : !lb ? -1 : cmpId(lb, la);
    return a.localeCompare(b);
  });
  $("contacts").replaceChildren(...sorted.map((n) => {
    const key = "@" + n;
    const c = convs.get(key);
    return view.entry(n, { active: current === key, online: online.has(n), unread: c ? c.unread : 0,
                           attrs: { user: n, key } });
  }));
}

function renderMessages(keepFromBottom, toEnd) {
  const box = $("messages");
  const c = conv(current);
  const from = box.scrollHeight - box.scrollTop;
  const ctx = { me, people, peerRead: c.peerRead, editable };
  box.replaceChildren(...c.items.map((it) => view.message(it, ctx)));
  if (keepFromBottom) box.scrollTop = box.scrollHeight - from;
  else if (toEnd || pinned || box.dataset.key !== current) box.scrollTop = box.scrollHeight;
  box.dataset.key = current;
  $("load-older").hidden = !(c.loaded && c.more);
  $("conv-title").textContent = isRoom(current) ? "Room " + current.slice(1) : current.slice(1);
  $("leave-room").hidden = !(isRoom(current) && current.slice(1) !== defaultRoom);
  renderMembers();
  renderTyping();
}

function renderTyping() {
  const c = conv(current);
  const t = $("typing");
  if (c.typing && c.typing.until > Date.now()) { t.textContent = c.typing.user + " is typing…"; t.hidden = false; }
  else { t.textContent = ""; t.hidden = true; }
}

async function openConv(key) {
  if (editing) stopEditing();
  current = key;
  root.dataset.view = "conv";
  const c = conv(key);
  render();
  if (!c.loaded) { await loadHistory(c, false); render(); }
  if (!document.hidden) { markRead(c); renderLists(); }
  if (isRoom(key) && !c.members) loadMembers(c);
  $("send-text").focus();
}

// A room's members (its list then follows the "member" frames).
async function loadMembers(c) {
  try {
    const body = await getJSON("/chat/api/members?" + new URLSearchParams({ room: c.key.slice(1) }));
    c.members = new Set(body.members);
    askPeople(body.members);
    scheduleWatch();
    renderMembers();
  } catch (e) { /* the room still works without its list */ }
}

function renderMembers() {
  const c = conv(current);
  const box = $("members-box");
  box.hidden = !(isRoom(current) && c.members);
  if (box.hidden) return;
  const names = [...c.members].sort((a, b) => a.localeCompare(b));
  $("members-count").textContent = String(names.length);
  $("members").replaceChildren(...names.map((n) => view.entry(n, { online: n === me || online.has(n), attrs: { member: n } })));
}

async function older() {
  const c = conv(current);
  if (!c.more || c.loading) return;
  await loadHistory(c, true);
  renderMessages(true);
}

// ---- wiring ----------------------------------------------------------------------------------

function onListClick(ev) {
  const li = ev.target.closest("li[data-key]");
  if (li) openConv(li.dataset.key);
}
$("rooms").addEventListener("click", onListClick);
$("members").addEventListener("click", (ev) => {  // a member: a private conversation with them
  const li = ev.target.closest("li[data-member]");
  if (li && li.dataset.member !== me) openConv("@" + li.dataset.member);
});
$("contacts").addEventListener("click", onListClick);
[$("rooms"), $("contacts")].forEach((l) => l.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onListClick(ev); }
}));

$("messages").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (!b) return;
  const id = b.closest("li").dataset.id;
  if (b.dataset.action === "edit") startEditing(id);
  else socket.send({ type: "delete", ...where(current), target: id });
});
$("messages").addEventListener("scroll", () => {
  const box = $("messages");
  pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  if (box.scrollTop < 40) older();
});
// A phone's keyboard or a rotation resizes the list: keep its end in view if it was.
new ResizeObserver(() => { if (pinned) $("messages").scrollTop = $("messages").scrollHeight; }).observe($("messages"));
$("load-older").addEventListener("click", older);

$("send-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("send-text");
  const fileInput = $("send-file");
  const text = input.value;
  if (editing) {
    if (text.trim()) socket.send({ type: "edit", ...where(editing.key), target: editing.id, data: text });
    stopEditing();
    return;
  }
  if (fileInput.files && fileInput.files.length) {
    sendFile(fileInput.files[0], text.trim());
    fileInput.value = "";
    input.value = "";
    return;
  }
  if (!text.trim()) return;
  sendMessage(text);
  input.value = "";
});

$("send-text").addEventListener("input", () => {
  const every = (limits.typing_interval || 2) * 1000 + 500;
  if (!editing && $("send-text").value && Date.now() - typingSent > every) {
    typingSent = Date.now();
    socket.send({ type: "typing", ...where(current) });
  }
});

document.addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape") return;
  if (editing) stopEditing();
  else root.dataset.view = "list";
});
$("back").addEventListener("click", () => { root.dataset.view = "list"; });

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("join-name").value.trim();
  if (!name) return;
  if (socket.send({ type: "join", room: name, cid: "join" })) { $("join-name").value = ""; joining = name; }
});
$("leave-room").addEventListener("click", () => {
  if (isRoom(current)) socket.send({ type: "leave", room: current.slice(1) });
});

const notifyButton = $("notify-btn");
if ("Notification" in window && Notification.permission === "default") {
  notifyButton.hidden = false;
  notifyButton.addEventListener("click", () => {
    Notification.requestPermission().then(() => { notifyButton.hidden = true; });
  });
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  const c = conv(current);
  if (c.loaded && viewing()) { markRead(c); renderLists(); }
  loadContacts();
});
setInterval(loadContacts, 60 * 1000);
// Chatting is activity: keep the shared session's idle timeout sliding.
setInterval(() => { fetch("/api/me", { credentials: "same-origin" }); }, 5 * 60 * 1000);

root.dataset.view = window.matchMedia("(max-width: 640px)").matches ? "list" : "conv";
(async () => {
  await loadConversations();
  render();
  loadContacts();
  socket.connect();
  await loadHistory(conv(current), false);
  render();
  if (!document.hidden && viewing()) { markRead(conv(current)); renderLists(); }
})();

// Building the page's elements.  Text from other people only ever goes in through textContent
// (never innerHTML), so it is always shown as text.
import { cmpId } from "./socket.js";

const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
const AUDIO = /\.(mp3|ogg)$/i;
const VIDEO = /\.(mp4|webm)$/i;
const STATE_TEXT = { sending: "Sending…", sent: "Sent", delivered: "Delivered", read: "Read" };

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// An avatar: the person's picture when they have one, else their initial.
export function avatar(name, people) {
  const known = people[name.toLowerCase()];
  if (known && known.avatar) {
    const img = el("img", "avatar");
    img.src = "/media/" + encodeURIComponent(known.avatar);
    img.alt = "";
    return img;
  }
  const span = el("span", "avatar initial", name.charAt(0).toUpperCase());
  span.setAttribute("aria-hidden", "true");
  return span;
}

// <time datetime="..."> shown as a local time (and the date when it is not today).
export function time(ts) {
  const d = new Date(ts);
  const t = el("time");
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  const today = new Date().toDateString() === d.toDateString();
  t.textContent = (today ? "" : d.toLocaleDateString() + " ") +
    d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return t;
}

// A shared file: pictures inline, audio and video in players (the gateway answers Range, so
// they can seek), anything else as a download link.  /media/<name> sends each allowed reader
// on to their own signed link.
export function media(name, caption) {
  const href = "/media/" + encodeURIComponent(name);
  let m;
  if (IMAGE.test(name)) { m = el("img", "media"); m.alt = caption || ""; }
  else if (AUDIO.test(name)) { m = el("audio", "media"); m.controls = true; m.preload = "metadata"; }
  else if (VIDEO.test(name)) { m = el("video", "media"); m.controls = true; m.preload = "metadata"; }
  else {
    m = el("a", "media", "Download the file");
    m.href = href; m.target = "_blank"; m.rel = "noopener";
    return m;
  }
  m.src = href;
  return m;
}

// One message.  ctx: me, people (avatars), peerRead (how far the other person read, private
// conversations), editable(item) (whether the edit window is still open).
export function message(item, ctx) {
  if (item.system) {
    const li = el("li", "system", item.data);
    return li;
  }
  const mine = item.sender === ctx.me;
  const li = el("li", "msg" + (mine ? " mine" : "") + (item.state === "sending" ? " pending" : "") +
    (item.deleted ? " deleted" : ""));
  if (item.id) li.dataset.id = item.id;
  li.appendChild(avatar(item.sender, ctx.people));
  const bubble = el("div", "bubble");
  const meta = el("div", "meta");
  meta.appendChild(el("span", "who", item.sender));
  if (item.ts) meta.appendChild(time(item.ts));
  if (item.edited && !item.deleted) meta.appendChild(el("span", "edited", "(edited)"));
  bubble.appendChild(meta);
  bubble.appendChild(el("div", "text", item.deleted ? "This message was deleted." : item.data));
  if (item.media && !item.deleted) bubble.appendChild(media(item.media, item.data));
  if (mine) {
    const foot = el("div", "foot");
    const state = item.id && ctx.peerRead && cmpId(item.id, ctx.peerRead) <= 0 ? "read" : item.state;
    if (state && STATE_TEXT[state]) {
      li.dataset.state = state;
      foot.appendChild(el("span", "state", STATE_TEXT[state]));
    }
    if (item.id && !item.deleted && ctx.editable(item)) {
      const edit = el("button", "edit", "Edit");
      edit.type = "button";
      edit.dataset.action = "edit";
      const del = el("button", "delete", "Delete");
      del.type = "button";
      del.dataset.action = "delete";
      foot.append(edit, del);
    }
    bubble.appendChild(foot);
  }
  li.appendChild(bubble);
  return li;
}

// One entry of the rooms or contacts list.
export function entry(label, { active, online, unread, attrs }) {
  const li = el("li", (active ? "active" : "") + (online ? " online" : ""));
  Object.assign(li.dataset, attrs);
  li.tabIndex = 0;
  li.setAttribute("role", "button");
  const name = el("span", "name");
  if (online !== undefined) name.appendChild(el("span", "dot"));
  name.appendChild(document.createTextNode(label));
  li.appendChild(name);
  if (unread) li.appendChild(el("span", "unread", unread >= 100 ? "99+" : String(unread)));
  return li;
}

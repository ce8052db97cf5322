// The chat connection: a WebSocket, one at a time, reconnected by itself with jittered
// exponential backoff, resuming from its positions so the server replays what was missed
// before the live frames: ?last_id=<the highest id seen of its private messages>&rooms=
// <room>:<the highest id seen in that room>,...  (each room numbers its own frames, and the
// private messages theirs).  Where WebSockets cannot
// open (a proxy that breaks the upgrade, a browser without them), it falls back by itself to
// long-polling (GET /chat/api/events, each frame a POST /chat/api/messages: the same frames,
// ids and resume) and tries a WebSocket again now and then, going back to it when one opens.
// It knows nothing of conversations: frames go to onFrame, state changes to onState
// ("connecting", "online", "reconnecting"; a second argument says why, or by which transport).
const POLL_NOTE = "over long-polling: WebSockets are unavailable here";

export class ChatSocket {
  constructor(user, { onFrame, onState, onRefused }) {
    this.user = user;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onRefused = onRefused;
    this.ws = null;
    this.attempt = 0;
    this.positions = { last_id: null, rooms: {} };
    this.storeKey = "webchat.positions." + user;
    try {
      const stored = JSON.parse(window.sessionStorage.getItem(this.storeKey));
      if (stored && typeof stored.rooms === "object") this.positions = stored;
    } catch (e) { /* storage off, or nothing stored */ }
    this.poll = null;           // while long-polling: {id, at, ready, online, csrf, abort, posting, tries}
    this.probeDelay = 10000;    // before the next WebSocket try while long-polling
  }

  // A frame with an id moves the position of its clock: its room's (a message's room, or the
  // room of the message an edit or deletion changes), else the private one.
  saw(f) {
    const room = f.room || (f.message && f.message.room);
    const at = room ? this.positions.rooms[room] : this.positions.last_id;
    if (at && cmpId(f.id, at) <= 0) return;
    if (room) this.positions.rooms[room] = f.id;
    else this.positions.last_id = f.id;
    this.keep();
  }

  // The sync after a replay names the positions the server has for this client: a room it
  // has seen nothing of yet is followed from there.
  adopt(sync) {
    const later = (id, at) => id && (!at || cmpId(id, at) > 0);
    if (later(sync.last_id, this.positions.last_id)) this.positions.last_id = sync.last_id;
    for (const [room, id] of Object.entries(sync.rooms || {})) {
      if (later(id, this.positions.rooms[room])) this.positions.rooms[room] = id;
    }
    this.keep();
  }

  // Only the rooms the user is in are resumed (hello names them; a room left is forgotten).
  inRooms(rooms) {
    for (const room of Object.keys(this.positions.rooms)) {
      if (!rooms.has(room)) delete this.positions.rooms[room];
    }
    this.keep();
  }

  keep() {
    try { window.sessionStorage.setItem(this.storeKey, JSON.stringify(this.positions)); } catch (e) { /* ignore */ }
  }

  // The query that resumes from positions ("" when there are none).
  static resume(positions) {
    const q = [];
    if (positions.last_id) q.push("last_id=" + encodeURIComponent(positions.last_id));
    const rooms = Object.entries(positions.rooms).map(([room, id]) => room + ":" + id);
    if (rooms.length) q.push("rooms=" + encodeURIComponent(rooms.join(",")));
    return q.join("&");
  }

  get open() {
    if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) return true;
    return this.poll !== null && this.poll.ready;
  }

  send(frame) {
    if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    if (this.poll !== null && this.poll.ready) {
      this.post(frame);
      return true;
    }
    return false;
  }

  connect() {
    if (typeof WebSocket === "undefined") { this.startPolling(); return; }
    const probing = this.poll !== null;
    if (!probing) this.onState(this.attempt ? "reconnecting" : "connecting");
    let url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat/" +
      encodeURIComponent(this.user);
    const resume = ChatSocket.resume(this.positions);
    if (resume) url += "?" + resume;
    let opened = false;
    let ended = false;
    let ws;
    try { ws = new WebSocket(url); } catch (e) { this.startPolling(); return; }
    this.ws = ws;
    const closed = (code, reason) => {
      if (ended) return;
      ended = true;
      clearTimeout(stuck);
      if (this.ws === ws) this.ws = null;
      this.closed(opened, code, reason);
    };
    // A proxy may hold the upgrade without answering, and a refused socket may never say so:
    // give up on it after a while.
    const stuck = setTimeout(() => { if (!opened) { ws.close(); closed(1006, ""); } }, 10000);
    ws.onopen = () => {
      opened = true;
      clearTimeout(stuck);
      if (this.poll !== null) this.stopPolling();  // back on a WebSocket: it resumes from its positions
    };
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "hello") this.attempt = 0;
      if (f.type === "sync") { this.adopt(f); this.onState("online"); }
      this.onFrame(f);
    };
    ws.onclose = (ev) => closed(ev.code, ev.reason);
  }

  closed(opened, code, reason) {
    if (this.poll !== null) { this.probeLater(); return; }  // a try while long-polling failed
    if (code === 1008 && /session/.test(reason)) { toLogin(); return; }
    this.onState("reconnecting", reason);
    if (code === 4029) {
      // Too many sockets of this user are open (other tabs, devices): try again slowly.
      this.onRefused(reason || "Too many chat windows are open: close one.");
      this.attempt = Math.max(this.attempt, 6);
    }
    if (!opened && this.attempt >= 1) {
      // Refused before the upgrade (the browser only sees 1006): is the session still there?
      // If it is, WebSockets do not get through here: long-poll instead.
      fetch("/api/me", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) toLogin();
        else if (r.ok && this.ws === null) this.startPolling();
      }).catch(() => { /* offline: keep retrying */ });
    }
    const delay = Math.min(30000, 500 * Math.pow(2, this.attempt)) * (0.5 + Math.random());
    this.attempt += 1;
    setTimeout(() => { if (this.poll === null && this.ws === null) this.connect(); }, delay);
  }

  // ---- long-polling ---------------------------------------------------------------------------

  async startPolling() {
    if (this.poll !== null) return;
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    const id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    const poll = { id, at: { last_id: this.positions.last_id, rooms: { ...this.positions.rooms } }, ready: false, online: false, csrf: null, abort: null,
      posting: Promise.resolve(), tries: 0 };
    this.poll = poll;
    this.onState(this.attempt ? "reconnecting" : "connecting", POLL_NOTE);
    if (typeof WebSocket !== "undefined") this.probeLater();
    while (this.poll === poll) await this.pollOnce(poll);
  }

  stopPolling() {
    const poll = this.poll;
    this.poll = null;
    if (poll !== null && poll.abort) poll.abort.abort();
  }

  probeLater() {
    const delay = this.probeDelay * (0.75 + Math.random() / 2);
    this.probeDelay = Math.min(300000, this.probeDelay * 2);
    setTimeout(() => { if (this.poll !== null && this.ws === null) this.connect(); }, delay);
  }

  async pollOnce(poll) {
    const backoff = () => new Promise((ok) => setTimeout(ok, Math.min(30000, 500 * Math.pow(2, poll.tries++)) * (0.5 + Math.random())));
    try {
      if (poll.csrf === null) poll.csrf = (await (await fetch("/api/me", { credentials: "same-origin" })).json()).csrf_token;
      let url = "/chat/api/events?poll=" + poll.id;
      const resume = ChatSocket.resume(poll.at);
      if (resume) url += "&" + resume;
      poll.abort = new AbortController();
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, signal: poll.abort.signal });
      if (this.poll !== poll) return;
      if (r.status === 401) { toLogin(); return; }
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        if (r.status === 429) this.onRefused(body.error || "Too many chat windows are open: close one.");
        poll.ready = poll.online = false;
        this.onState("reconnecting", POLL_NOTE);
        await backoff();
        return;
      }
      poll.tries = 0;
      poll.ready = true;
      this.attempt = 0;
      if (body.last_id) poll.at = { last_id: body.last_id, rooms: body.rooms || {} };
      for (const f of body.frames) {
        if (this.poll !== poll) return;
        if (f.type === "close") {
          if (f.code === 1008 && /session/.test(f.reason)) { toLogin(); return; }
          continue;  // its client there ended (a restart, a takeover): the next poll resumes
        }
        if (f.type === "sync") this.adopt(f);
        this.onFrame(f);
      }
      if (this.poll === poll && !poll.online) { poll.online = true; this.onState("online", POLL_NOTE); }
    } catch (e) {
      if (this.poll !== poll) return;  // aborted: back on a WebSocket
      poll.online = false;
      this.onState("reconnecting", POLL_NOTE);
      await backoff();
    }
  }

  // Frames go one after the other (a socket keeps their order; so does this), each answered
  // by its own response.  A POST that fails to arrive is answered "unavailable": the page
  // sends a message again with the same cid, stored once.
  post(frame) {
    const poll = this.poll;
    poll.posting = poll.posting.then(async () => {
      let frames;
      try {
        const r = await fetch("/chat/api/messages?poll=" + poll.id, {
          method: "POST", credentials: "same-origin", body: JSON.stringify(frame),
          headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": poll.csrf },
        });
        const body = await r.json().catch(() => ({}));
        frames = body.frames || (r.ok ? [] : [{ type: "error", code: r.status >= 500 ? "unavailable" : "refused",
          error: body.error || "refused (" + r.status + ")", cid: frame.cid }]);
      } catch (e) {
        frames = [{ type: "error", code: "unavailable", error: "the connection was lost", cid: frame.cid }];
      }
      frames.forEach((f) => this.onFrame(f));
    });
  }
}

// The session is gone (logged out, expired): log in again, then back here.
function toLogin() { location.href = "/login?next=/chat/"; }

// Compare two ids "<ms>-<seq>" as numbers.
export function cmpId(a, b) {
  const x = a.split("-"), y = b.split("-");
  const d = Number(x[0]) - Number(y[0]);
  return d !== 0 ? d : Number(x[1]) - Number(y[1]);
}

// The chat WebSocket: one at a time, reconnected by itself with jittered exponential backoff,
// resuming with ?last_id=<the highest id seen> so the server replays what was missed before the
// live frames (ids are global and increasing).  It knows nothing of conversations: frames go to
// onFrame, state changes to onState ("connecting", "online", "reconnecting", "offline").
export class ChatSocket {
  constructor(user, { onFrame, onState, onRefused }) {
    this.user = user;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onRefused = onRefused;
    this.ws = null;
    this.attempt = 0;
    this.lastId = null;
    this.storeKey = "webchat.lastId." + user;
    try { this.lastId = window.sessionStorage.getItem(this.storeKey); } catch (e) { /* storage off */ }
  }

  // Frames with an id move the resume point (in the order they arrive, which is id order).
  saw(id) {
    if (id && (!this.lastId || cmpId(id, this.lastId) > 0)) {
      this.lastId = id;
      try { window.sessionStorage.setItem(this.storeKey, id); } catch (e) { /* ignore */ }
    }
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  connect() {
    this.onState(this.attempt ? "reconnecting" : "connecting");
    let url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat/" +
      encodeURIComponent(this.user);
    if (this.lastId) url += "?last_id=" + encodeURIComponent(this.lastId);
    let opened = false;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "hello") this.attempt = 0;
      if (f.type === "sync") this.onState("online");
      this.onFrame(f);
    };
    ws.onclose = (ev) => {
      this.ws = null;
      if (ev.code === 1008 && /session/.test(ev.reason)) { location.href = "/login?next=/chat/"; return; }
      this.onState("reconnecting", ev.reason);
      if (ev.code === 4029) {
        // Too many sockets of this user are open (other tabs, devices): try again slowly.
        this.onRefused(ev.reason || "Too many chat windows are open: close one.");
        this.attempt = Math.max(this.attempt, 6);
      }
      if (!opened && this.attempt >= 2) {
        // Refused before the upgrade (the browser only sees 1006): is the session still there?
        fetch("/api/me", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) location.href = "/login?next=/chat/";
        }).catch(() => { /* offline: keep retrying */ });
      }
      const delay = Math.min(30000, 500 * Math.pow(2, this.attempt)) * (0.5 + Math.random());
      this.attempt += 1;
      setTimeout(() => this.connect(), delay);
    };
  }
}

// Compare two ids "<ms>-<seq>" as numbers.
export function cmpId(a, b) {
  const x = a.split("-"), y = b.split("-");
  const d = Number(x[0]) - Number(y[0]);
  return d !== 0 ? d : Number(x[1]) - Number(y[1]);
}

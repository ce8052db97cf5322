// The chat page: the tutorial's ptop.html client, grown up.
// - one WebSocket to /chat/<me>; the server sets the sender, we only send {receiver|room, data, cid};
// - reconnects by itself with jittered exponential backoff, sending ?last_id=<the last id seen>
//   so the server replays what we missed before live messages (ids are global and increasing);
// - contacts (GET /api/users) with online dots: the page watches its conversations and contacts
//   (a "watch" frame, answered by "watching", then "presence" frames); rooms to join/leave;
// - the tutorial's "receiver is offline" notice (the message is kept and delivered later).
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;
  var me = root.dataset.user;
  var defaultRoom = root.dataset.defaultRoom;
  var storeKey = "webchat.lastId." + me;
  var $ = function (id) { return document.getElementById(id); };

  var ws = null;
  var attempt = 0;
  var lastId = null;
  try { lastId = window.sessionStorage.getItem(storeKey); } catch (e) { /* storage off */ }
  var online = new Set();
  var contacts = [];
  var rooms = new Set([defaultRoom]);
  var convs = {};          // key ("@name" or "#room") -> {items: [], unread: n}
  var seen = new Set();    // message ids shown (a resumed replay never shows one twice)
  var pending = {};        // cid -> <li> of a message we sent, until its ack
  var current = "#" + defaultRoom;
  var cidSeq = 0;
  var watchLimit = 0;      // from hello: the most users one watch frame may name
  var watchSent = null;    // the list last sent (JSON), so an unchanged list is not sent again
  var watchTimer = null;

  function cmpId(a, b) {
    var x = a.split("-"), y = b.split("-");
    var d = Number(x[0]) - Number(y[0]);
    return d !== 0 ? d : Number(x[1]) - Number(y[1]);
  }

  function setStatus(state, text) {
    var el = $("chat-status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function notice(text) { $("notice").textContent = text || ""; }

  function conv(key) {
    if (!convs[key]) convs[key] = { items: [], unread: 0 };
    return convs[key];
  }

  // Whose presence we are sent: conversations first, then contacts, up to the server's limit.
  // Sent after every hello (a new socket watches nobody) and when the list grows.
  function sendWatch() {
    watchTimer = null;
    if (!ws || ws.readyState !== WebSocket.OPEN || !watchLimit) return;
    var names = new Set();
    Object.keys(convs).forEach(function (k) { if (k.charAt(0) === "@") names.add(k.slice(1)); });
    contacts.forEach(function (n) { names.add(n); });
    names.delete(me);
    var list = Array.from(names).slice(0, watchLimit);
    var json = JSON.stringify(list);
    if (json === watchSent) return;
    watchSent = json;
    ws.send(JSON.stringify({ type: "watch", users: list, cid: "watch" }));
  }

  function scheduleWatch() {
    if (!watchTimer) watchTimer = setTimeout(sendWatch, 200);
  }

  function addItem(key, item) {
    if (key.charAt(0) === "@" && !convs[key]) scheduleWatch();
    var c = conv(key);
    c.items.push(item);
    if (c.items.length > 500) c.items.shift();
    if (key === current) renderMessages(); else { c.unread += 1; renderLists(); }
  }

  function li(text, cls) {
    var el = document.createElement("li");
    if (cls) el.className = cls;
    el.textContent = text;
    return el;
  }

  function renderMessages() {
    var box = $("messages");
    box.textContent = "";
    var c = conv(current);
    c.unread = 0;
    c.items.forEach(function (it) {
      var el = document.createElement("li");
      if (it.system) { el.className = "system"; el.textContent = it.data; }
      else {
        el.className = (it.sender === me ? "mine" : "") + (it.pending ? " pending" : "");
        var who = document.createElement("span");
        who.className = "who";
        who.textContent = it.sender;
        el.appendChild(who);
        el.appendChild(document.createTextNode(it.data));
        if (it.media) {
          // /media/<name> redirects each allowed reader to their own signed link.
          var href = "/media/" + encodeURIComponent(it.media);
          if (/\.(png|jpe?g|gif|webp)$/i.test(it.media)) {
            var img = document.createElement("img");
            img.className = "media"; img.src = href; img.alt = it.data;
            el.appendChild(img);
          } else {
            var a = document.createElement("a");
            a.className = "media"; a.href = href; a.target = "_blank"; a.rel = "noopener";
            a.textContent = "open the file";
            el.appendChild(a);
          }
        }
        if (it.id) el.dataset.id = it.id;
      }
      box.appendChild(el);
    });
    box.scrollTop = box.scrollHeight;
    $("conv-title").textContent = current.charAt(0) === "#" ? "Room " + current.slice(1) : current.slice(1);
    $("leave-room").hidden = !(current.charAt(0) === "#" && current.slice(1) !== defaultRoom);
    renderLists();
  }

  function renderLists() {
    var rl = $("rooms");
    rl.textContent = "";
    Array.from(rooms).sort().forEach(function (r) {
      var el = li("#" + r, current === "#" + r ? "active" : "");
      el.dataset.room = r;
      var u = conv("#" + r).unread;
      if (u) { var b = document.createElement("span"); b.className = "unread"; b.textContent = u; el.appendChild(b); }
      el.addEventListener("click", function () { current = "#" + r; renderMessages(); });
      rl.appendChild(el);
    });
    var cl = $("contacts");
    cl.textContent = "";
    var names = new Set(contacts);
    Object.keys(convs).forEach(function (k) { if (k.charAt(0) === "@") names.add(k.slice(1)); });
    names.delete(me);
    Array.from(names).sort().forEach(function (n) {
      var el = document.createElement("li");
      el.className = (online.has(n) ? "online" : "") + (current === "@" + n ? " active" : "");
      el.dataset.user = n;
      var name = document.createElement("span");
      var dot = document.createElement("span");
      dot.className = "dot";
      name.appendChild(dot);
      name.appendChild(document.createTextNode(n));
      el.appendChild(name);
      var u = conv("@" + n).unread;
      if (u) { var b = document.createElement("span"); b.className = "unread"; b.textContent = u; el.appendChild(b); }
      el.addEventListener("click", function () { current = "@" + n; renderMessages(); });
      cl.appendChild(el);
    });
  }

  function onFrame(f) {
    switch (f.type) {
      case "hello":
        attempt = 0;
        root.dataset.node = f.node;  // which chat process serves us (shown for support and tests)
        rooms = new Set(f.rooms || [defaultRoom]);
        watchLimit = (f.limits && f.limits.watch) || 0;
        watchSent = null;
        sendWatch();
        renderLists();
        break;
      case "watching":
        online = new Set(f.online || []);
        renderLists();
        break;
      case "sync":
        setStatus("online", "connected");
        if (f.gap) notice("Some older messages could not be replayed.");
        resendPending();
        break;
      case "message":
        // (Our own messages come back too, after their ack: they still move lastId.)
        if (!lastId || cmpId(f.id, lastId) > 0) {
          lastId = f.id;
          try { window.sessionStorage.setItem(storeKey, lastId); } catch (e) { /* ignore */ }
        }
        if (seen.has(f.id)) break;
        seen.add(f.id);
        var key = f.room ? "#" + f.room : "@" + (f.sender === me ? f.receiver : f.sender);
        if (f.sender === me && f.cid !== undefined && pending[f.cid]) {
          var p = pending[f.cid]; delete pending[f.cid];
          p.pending = false; p.id = f.id;
          if (key === current) renderMessages();
          break;
        }
        addItem(key, { id: f.id, sender: f.sender, data: f.data, media: f.media });
        break;
      case "ack":
        var item = pending[f.cid];
        if (item) {
          item.id = f.id;
          if (!f.room) { item.pending = false; delete pending[f.cid]; seen.add(f.id); }
          renderMessages();
        }
        break;
      case "system":
        addItem(f.about ? "@" + f.about : current, { system: true, data: (f.about ? f.about + ": " : "") + f.data });
        break;
      case "presence":
        if (f.online) online.add(f.user); else online.delete(f.user);
        renderLists();
        break;
      case "room":
        if (f.action === "join") rooms.add(f.room);
        else { rooms.delete(f.room); if (current === "#" + f.room) { current = "#" + defaultRoom; renderMessages(); } }
        renderLists();
        break;
      case "error":
        if (f.cid === "watch") {
          // Not watched (the store was unavailable, or too many frames): try again shortly.
          watchSent = null;
          if (!watchTimer) watchTimer = setTimeout(sendWatch, 3000 * (0.5 + Math.random()));
          break;
        }
        if (f.code === "unavailable" && f.cid !== undefined && pending[f.cid]) {
          // Maybe stored, maybe not: send it again shortly with the same cid (stored once).
          var again = pending[f.cid];
          setTimeout(function () { if (again.pending && !again.id && ws) ws.send(JSON.stringify(again.frame)); },
                     2000 * (0.5 + Math.random()));
          break;
        }
        notice(f.error);
        if (f.cid !== undefined && pending[f.cid]) {
          pending[f.cid].pending = false; pending[f.cid].data += "  (not sent: " + f.error + ")";
          delete pending[f.cid]; renderMessages();
        }
        break;
    }
  }

  function connect() {
    setStatus("connecting", attempt ? "reconnecting…" : "connecting…");
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat/" + encodeURIComponent(me);
    if (lastId) url += "?last_id=" + encodeURIComponent(lastId);
    var opened = false;
    ws = new WebSocket(url);
    ws.onopen = function () { opened = true; };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(f);
    };
    ws.onclose = function (ev) {
      ws = null;
      // Sent but never acknowledged: it may or may not have been stored.  It is sent again,
      // with the same cid, once reconnected: the server stores a cid once (CHAT_DEDUP_WINDOW).
      setStatus("offline", "disconnected" + (ev.reason ? " (" + ev.reason + ")" : ""));
      if (ev.code === 1008 && /session/.test(ev.reason)) { location.href = "/login?next=/chat/"; return; }
      if (ev.code === 4029) {
        // Too many sockets of this user are open (other tabs, devices): try again slowly.
        notice(ev.reason || "Too many chat windows are open: close one.");
        attempt = Math.max(attempt, 6);
      }
      if (!opened && attempt >= 2) {
        // Refused before the upgrade (the browser only sees 1006): is the session still there?
        fetch("/api/me", { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) location.href = "/login?next=/chat/";
        }).catch(function () { /* offline: keep retrying */ });
      }
      var delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random());
      attempt += 1;
      setTimeout(connect, delay);
    };
  }

  function resendPending() {
    Object.keys(pending).forEach(function (cid) {
      var it = pending[cid];
      if (!it.id && it.frame) ws.send(JSON.stringify(it.frame));
    });
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { notice("Not connected: the message was not sent."); return false; }
    ws.send(JSON.stringify(frame));
    return true;
  }

  function sendMessage(text, media) {
    var cid = "c" + (++cidSeq) + "-" + Date.now();
    var frame = { data: text, cid: cid };
    if (media) frame.media = media;
    if (current.charAt(0) === "#") frame.room = current.slice(1); else frame.receiver = current.slice(1);
    if (!send(frame)) return false;
    notice("");
    var item = { sender: me, data: text, media: media, pending: true, frame: frame };
    pending[cid] = item;
    addItem(current, item);
    return true;
  }

  // A file: uploaded to the files service first (POST /media/, with the session's CSRF
  // token), then sent as a message whose "media" is its name; chat lets the conversation read it.
  function sendFile(file, caption) {
    notice("Uploading " + file.name + "…");
    fetch("/api/me", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (me_) {
        var body = new FormData();
        body.append("file", file);
        return fetch("/media/", { method: "POST", body: body, credentials: "same-origin",
                                  headers: { Accept: "application/json", "X-CSRF-Token": me_.csrf_token } });
      })
      .then(function (r) { return r.json().then(function (d) { return { ok: r.ok, d: d }; }); })
      .then(function (res) {
        if (!res.ok) { notice("Upload refused: " + (res.d.error || "error")); return; }
        sendMessage(caption || res.d.original_name || res.d.name, res.d.name);
      })
      .catch(function () { notice("Upload failed."); });
  }

  $("send-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("send-text");
    var fileInput = $("send-file");
    var text = input.value;
    if (fileInput.files && fileInput.files.length) {
      sendFile(fileInput.files[0], text.trim());
      fileInput.value = "";
      input.value = "";
      return;
    }
    if (!text.trim()) return;
    if (sendMessage(text)) input.value = "";
  });

  $("join-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var name = $("join-name").value.trim();
    if (!name) return;
    if (send({ type: "join", room: name })) { current = "#" + name; conv(current); $("join-name").value = ""; renderMessages(); }
  });

  $("leave-room").addEventListener("click", function () {
    if (current.charAt(0) === "#") send({ type: "leave", room: current.slice(1) });
  });

  // Contacts: the registered users, 50 a page (auth's /api/users), up to 40 pages; anyone
  // else still shows up through their conversation.
  function loadContacts(page) {
    fetch("/api/users/page/" + page, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { users: [] }; })
      .then(function (d) {
        var users = (d.users || []).map(function (u) { return typeof u === "string" ? u : u.name; });
        contacts = contacts.concat(users);
        renderLists();
        scheduleWatch();
        if (users.length === 50 && page < 40) loadContacts(page + 1);
      }).catch(function () { /* conversations still list their people */ });
  }
  loadContacts(1);

  // Chatting is activity: keep the shared session's idle timeout sliding.
  setInterval(function () { fetch("/api/me", { credentials: "same-origin" }); }, 5 * 60 * 1000);

  renderMessages();
  connect();
})();

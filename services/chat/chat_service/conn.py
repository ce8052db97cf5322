"""One open WebSocket: the loop of its request greenlet (the queue, ids and replay are
:class:`.client.Client`'s).

The request greenlet does everything for its socket: it reads the socket (simple-websocket's
parser turns the bytes into ``ws.input_buffer`` messages and answers pings), hands each frame
to the commands, writes what was queued in ``out``, and pings.  It sleeps on ``ws.event``,
which :meth:`Connection.wake` sets and the socket's read watcher sets when bytes arrive (see
:mod:`.transport`).  So each socket costs one greenlet: no reader or writer greenlet and no
timer or polling per socket.

A slow reader only ever blocks its own greenlet: nobody else writes to a socket, they append
to its bounded queue; when the queue is full the socket is closed (1008) and the client
resumes from its last id when it reconnects.
"""
import logging
import time

import gevent
from redis.exceptions import RedisError

from . import metrics, transport
from .client import Client
from .wire import PING_FRAME

log = logging.getLogger(__name__)

#: Socket closed because its user has CHAT_MAX_SOCKETS_PER_USER sockets open already.
CLOSE_TOO_MANY_SOCKETS = 4029
#: Queued frames written at once.
BATCH = 64


class Connection(Client):
    def __init__(self, node, ws, user, session_hash, rooms, since):
        super().__init__(node, user, session_hash, rooms, since)
        self.ws = ws
        self.raw = transport.attach(ws, node.cfg["CHAT_SEND_TIMEOUT"])
        self.readable = False              # set by the read watcher: bytes are waiting
        self.ping_due = False

    @property
    def token(self):
        return f"{self.node.id}.{id(self):x}"

    def wake(self):
        self.ws.event.set()

    def ping(self):
        self.ping_due = True
        self.ws.event.set()

    # ---- the request greenlet -----------------------------------------------------------------

    def run(self):
        try:
            admitted = self.open()
        except RedisError:
            self._close(1011, "chat store unavailable: try again shortly")
            return
        if not admitted:
            limit = self.node.cfg["CHAT_MAX_SOCKETS_PER_USER"]
            self._close(CLOSE_TOO_MANY_SOCKETS, f"too many open sockets: at most {limit} per user; close one")
            return
        try:
            self.loop()
        except RedisError:
            self._close(1011, "chat store unavailable: reconnect to resume")
        except transport.Gone:
            pass
        finally:
            transport.abort(self.ws, self.raw)
            transport.detach(self.ws, self.raw)
            self.node.remove(self)

    def loop(self):
        ws = self.ws
        event = ws.event
        while True:
            if self.closing is not None:
                if self.closing[0] == 1012 and ws.connected:
                    # A restart is not the client's fault: what it sent before it heard of
                    # the restart (read or still in the kernel buffer) is handled and acked.
                    for _ in range(8):
                        if not transport.read(ws, self.raw):
                            break
                    while ws.input_buffer:
                        self.handle(ws.input_buffer.pop(0))
                    if self.out:
                        self.flush()
                self._close(*self.closing)
                return
            if self.readable:
                self.readable = transport.read(ws, self.raw)
                continue
            if not ws.connected:
                # Frames that arrived just before the client's close are still handled (a
                # script may send and close at once): stored and published, replies dropped.
                while ws.input_buffer:
                    self.handle(ws.input_buffer.pop(0))
                return
            if ws.input_buffer:
                self.handle(ws.input_buffer.pop(0))
                if self.out:
                    self.flush()
                continue
            if self.out:
                self.flush()
                continue
            if self.ping_due:
                self.ping_due = False
                if not ws.pong_received:
                    log.info("closing %s's socket: no pong within %ss", self.user, self.node.cfg["CHAT_PING_INTERVAL"])
                    self.doom(1001, "ping timeout")
                    continue
                ws.pong_received = False
                self.send_raw(PING_FRAME)
                continue
            event.clear()
            if self.out or self.closing is not None or self.ping_due:
                continue
            transport.wait_readable(ws, self.raw, self._on_readable)

    def _on_readable(self):
        self.readable = True
        self.ws.event.set()

    def flush(self):
        out = self.out
        batch = []
        first = None
        n = 0
        taken = out[:BATCH]
        del out[:BATCH]
        for _, frame, _ in taken:
            batch.append(frame)
        self.send_raw(batch[0] if len(batch) == 1 else b"".join(batch))
        for mid, _, clock in taken:
            if mid is not None:
                self.written(mid, clock)
                n += 1
                if first is None:
                    first = mid
        if first is not None:
            metrics.MESSAGES_OUT.inc(n)
            metrics.DELIVERY.observe(max(0.0, time.time() - first[0] / 1000.0))

    def send_raw(self, data):
        try:
            transport.write(self.ws, data)
        except gevent.Timeout:
            metrics.SLOW_CONSUMER_CLOSES.inc()
            log.warning("dropping slow consumer %s: a write blocked for %ss", self.user,
                        self.node.cfg["CHAT_SEND_TIMEOUT"])
            transport.abort(self.ws, self.raw)
            raise transport.Gone() from None
        except OSError:
            transport.abort(self.ws, self.raw)
            raise transport.Gone() from None

    def _close(self, code, reason):
        transport.close(self.ws, self.raw, code, reason)


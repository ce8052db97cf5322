"""Every use of simple-websocket's, gevent's and redis-py's internals, in one place.

Rule: no other chat module touches a private attribute of those libraries.  What is used, and
why (each is pinned in constraints.txt, and its use is covered by the chat tests):

- simple-websocket (the ``Server`` flask-sock hands the route): no reader thread
  (:class:`NoReader`); the request greenlet feeds the bytes it reads to its wsproto parser
  (``ws.ws.receive_data``, ``ws._handle_events``) and writes through ``ws.sock``, which is
  replaced by a :class:`Socket` with a write timeout.
- gevent's socket: its OS socket (``_sock``) for a first non-blocking ``send``/``recv`` without
  a timer, and its read watcher (``_read_event``) to wake the socket's greenlet when bytes
  arrive, without a greenlet or a timer per socket.
- redis-py's ``PubSub._reconnect`` (see :class:`PubSub`).
- gevent's greenlet tree tracking, off (:func:`untrack_greenlets`).
- gevent's loop, for a read watcher on a parked long-poll's connection (:func:`on_hangup`).
"""
import socket

import gevent
import redis
from gevent.event import Event
from wsproto.utilities import LocalProtocolError

#: Bytes of one read; more waiting is read on the next turn of the socket's loop.
RECV_BYTES = 16384


class Gone(Exception):
    """The socket is dead (a write failed or timed out): stop, nothing more can be sent."""


class NoReader:
    """Given to simple-websocket as its ``thread_class``: the reader "thread" it starts does
    nothing, because the request greenlet reads the socket itself (:func:`read`).  A greenlet
    less per socket: about 3 KiB of memory and two greenlet switches per incoming frame."""

    __slots__ = ("name",)

    def __init__(self, target):
        self.name = "chat-no-reader"

    def start(self):
        pass


def server_options(max_message_size):
    """flask-sock's ``SOCK_SERVER_OPTIONS`` for simple-websocket: no reader thread, gevent's
    Event to wake the socket's greenlet.  No ``ping_interval``: the node pings every socket
    from one greenlet."""
    return {"max_message_size": max_message_size, "thread_class": NoReader, "event_class": Event}


def untrack_greenlets():
    """gevent records who spawned each greenlet, with a stack summary (a debugging aid):
    about 2.5 KiB per greenlet, i.e. per socket and per connection.  Off in chat."""
    gevent.config.track_greenlet_tree = False


class Socket:
    """The client socket as the connection and simple-websocket (pongs, close frames) write
    to it.  Only the request greenlet writes, so no lock; each write is complete (gevent's
    ``send`` may write only part) and blocks at most ``timeout`` seconds (gevent.Timeout).
    The first attempt is one plain non-blocking send: most writes fit in the kernel buffer,
    and then no timer is armed at all."""

    __slots__ = ("raw", "timeout")

    def __init__(self, raw, timeout):
        self.raw = raw
        self.timeout = timeout

    def send(self, data):
        try:
            n = self.raw._sock.send(data)  # the OS socket under gevent's is non-blocking
        except BlockingIOError:
            n = 0
        if n < len(data):
            with gevent.Timeout(self.timeout):
                self.raw.sendall(memoryview(data)[n:])
        return len(data)


def attach(ws, send_timeout):
    """Take over ``ws``'s socket (simple-websocket's ``Server``): writes go through a
    :class:`Socket`.  Returns gevent's socket, to read from (:func:`read`) and to close."""
    raw = ws.sock
    ws.sock = Socket(raw, send_timeout)
    return raw


def detach(ws, raw):
    """Undo :func:`attach`: no reference cycle is left through simple-websocket's socket."""
    ws.sock = raw


def write(ws, data):
    """Write ``data`` whole; raises gevent.Timeout when it blocked too long, OSError when the
    socket is dead."""
    ws.sock.send(data)


def read(ws, raw):
    """One non-blocking read, handed to simple-websocket's parser (what its reader thread
    would do): messages land in ``ws.input_buffer``, pings are answered, a close frame, EOF or
    a protocol error mark the socket disconnected, a frame over the size limit is answered
    with 1009.  True when a full read suggests more is waiting.  Raises :class:`Gone` when
    the parser's own reply (a pong, a close) could not be written."""
    try:
        data = raw._sock.recv(RECV_BYTES)
    except BlockingIOError:
        return False
    except OSError:
        ws.connected = False
        return False
    if not data:
        ws.connected = False
        return False
    try:
        ws.ws.receive_data(data)
        ws.connected = ws._handle_events()
    except LocalProtocolError:
        ws.connected = False
    except (gevent.Timeout, OSError):
        abort(ws, raw)
        raise Gone() from None
    return len(data) == RECV_BYTES


def wait_readable(ws, raw, on_readable):
    """Sleep on ``ws.event`` until something sets it; meanwhile gevent's read watcher of the
    socket calls ``on_readable`` when bytes arrive (level-triggered: bytes that arrived while
    the greenlet was busy wake it at once).  No timeout: no timer per socket."""
    watcher = raw._read_event  # gevent's own read watcher of this socket, idle here
    watcher.start(on_readable)
    try:
        ws.event.wait()
    finally:
        watcher.stop()


def abort(ws, raw):
    """Drop the TCP connection without a close frame."""
    ws.connected = False
    try:
        raw.close()
    except OSError:
        pass


def close(ws, raw, code, reason):
    """Send a close frame with ``code`` and ``reason`` and give the peer a moment to answer
    (one read: its close reply or EOF), so the frame is read before the TCP connection goes."""
    with gevent.Timeout(2, False):  # False: a silent timeout, no exception
        try:
            if ws.connected:
                ws.close(reason=code, message=reason)
                raw.recv(RECV_BYTES)
        except Exception:  # noqa: BLE001 - the peer is gone; nothing more to do
            pass
    ws.connected = False


class PubSub(redis.client.PubSub):
    """A pub/sub connection that never reconnects behind its reader's back.

    redis-py's PubSub reconnects (and resubscribes, reading the socket) in whichever greenlet
    met the error: a socket greenlet's SUBSCRIBE on a dropped connection would then read the
    connection the broker's listener is reading (gevent's ConcurrentObjectUseError) or leave
    it half set up, and the listener would go deaf.  Here an error only disconnects and
    raises; the listener makes a new connection, resubscribes and has every socket caught up.
    (It replaces a private method of redis-py 8, hence the pin in pyproject.toml and a unit
    test.)"""

    def _reconnect(self, conn, error=None, *args, **kwargs):
        conn.disconnect()
        raise error or redis.ConnectionError("pub/sub connection lost")


def on_hangup(sock, callback):
    """Call ``callback`` if the peer closes ``sock``, an HTTP connection whose request waits
    (a parked long-poll: the gateway closes it when its client goes away): a read watcher,
    gevent's own, that peeks at what arrived.  Returns the function that stops it."""
    if sock is None:
        return lambda: None
    watcher = gevent.get_hub().loop.io(sock.fileno(), 1)

    def ready():
        try:
            data = sock._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        watcher.stop()
        if not data:
            callback()

    watcher.start(ready)
    return watcher.stop

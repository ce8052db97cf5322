"""Chat settings on top of the shared ones (see ``webchat_common.config``).

Every name is read from the environment with its default's type; docs/configuration.md has the table.
"""
from webchat_common import Config, TestConfig


class ChatConfig(Config):
    #: Under gevent every socket may need Redis at once (send, join, resume); they queue for
    #: this many pooled connections (plus one pub/sub connection per process).
    REDIS_MAX_CONNECTIONS = 64
    REDIS_POOL_TIMEOUT = 10.0
    #: Extra origins allowed to open the WebSocket, comma separated (``https://chat.example``).
    #: The gateway's own origin (scheme://Host of the request) is always allowed.
    CHAT_ALLOWED_ORIGINS = ""
    #: Entries kept per conversation (private or room; approximate, XADD MAXLEN ~) and their
    #: age, seconds (a conversation with no message for this long is forgotten).
    CHAT_HISTORY_LENGTH = 10000
    CHAT_HISTORY_AGE = 7 * 24 * 3600
    #: Messages in a history page (``GET /chat/api/history``): by default, and at most.
    CHAT_HISTORY_PAGE = 50
    CHAT_HISTORY_PAGE_MAX = 100
    #: Private conversations listed (``GET /chat/api/conversations``), the latest first.
    CHAT_CONVERSATIONS_MAX = 200
    #: Members listed per room (``GET /chat/api/members``).
    CHAT_MEMBERS_MAX = 200
    #: Unread messages counted per conversation; a count of this many means "this many or more".
    CHAT_UNREAD_CAP = 100
    #: Seconds after sending during which one may edit or delete one's message.
    CHAT_EDIT_WINDOW = 15 * 60
    #: A socket's ``typing`` frames: at most one every this many seconds; each tells the others
    #: for CHAT_TYPING_TTL seconds (the ``expires_in`` they are sent); not sent in rooms with
    #: more than CHAT_TYPING_MAX_MEMBERS members.
    CHAT_TYPING_INTERVAL = 2.0
    CHAT_TYPING_TTL = 6.0
    CHAT_TYPING_MAX_MEMBERS = 100
    #: Per-connection rate limit: a token bucket of this rate (frames/s) and burst.
    CHAT_RATE_LIMIT = 100.0
    CHAT_RATE_BURST = 200
    #: Frames refused by the rate limit before the socket is closed with 1008.
    CHAT_RATE_STRIKES = 20
    #: Largest incoming frame, bytes; a larger one closes the socket with 1009.
    CHAT_MAX_FRAME = 16 * 1024
    #: Outgoing frames waiting for a slow reader before its socket is closed (1008).
    CHAT_SEND_QUEUE = 512
    #: Seconds one write to a socket may block before the socket is dropped.
    CHAT_SEND_TIMEOUT = 10.0
    #: Kernel send buffer per socket, bytes (0: the kernel's autotuning).  Smaller means less
    #: kernel memory per idle socket and a slow reader is noticed sooner.
    CHAT_SOCKET_SNDBUF = 0
    #: WebSocket ping interval, seconds; keep it below the gateway's proxy_read_timeout (75 s).
    CHAT_PING_INTERVAL = 25.0
    #: Presence TTL, seconds: a process that dies without cleaning up stops counting after this.
    #: Each process refreshes its users every TTL/3.
    CHAT_PRESENCE_TTL = 30.0
    #: Presence changes are collected this long, seconds, and pushed to their watchers together.
    CHAT_PRESENCE_BATCH = 0.25
    #: Seconds between checks that each open socket's session still exists (expiry, deletion
    #: that was not announced on ``sessions:ended``).
    CHAT_SESSION_CHECK_INTERVAL = 30.0
    #: Seconds between pub/sub health checks (PING); a silent subscriber is reconnected.
    CHAT_PUBSUB_HEALTH_INTERVAL = 5.0
    #: Long-polling (``GET /chat/api/events``, for networks that block WebSockets): a poll
    #: waits at most this many seconds (below the gateway's proxy_read_timeout, 75 s) ...
    CHAT_POLL_TIMEOUT = 25.0
    #: ... and its client stays on its process this long after a poll ended, collecting what
    #: comes for its next poll (then it is gone, and its presence with it) ...
    CHAT_POLL_GRACE = 10.0
    #: ... and is remembered this long (seconds) by any process its next poll may reach.
    CHAT_POLL_RECORD_TTL = 24 * 3600
    #: Clients (sockets and long-poll tabs) one process may hold; one more is refused before the
    #: upgrade with 503.  0: derived from the container's memory limit (see chat_service.capacity:
    #: the limit per worker process, less CHAT_PROCESS_MEMORY_MIB, over CHAT_CLIENT_MEMORY_KIB),
    #: or no cap when the container has no memory limit.
    CHAT_MAX_CLIENTS = 0
    CHAT_PROCESS_MEMORY_MIB = 64
    CHAT_CLIENT_MEMORY_KIB = 48
    #: Sockets (and long-poll clients) one user may have open at once, over every chat process
    #: (tabs, devices); one more socket is closed with 4029 right after the upgrade, one more
    #: long-poll is answered 429.
    CHAT_MAX_SOCKETS_PER_USER = 20
    #: Seconds a message's ``cid`` is remembered: the same ``cid`` sent again to the same
    #: receiver or room within this window is acknowledged with the first message's id
    #: (``"duplicate": true``) and not stored twice.  0 turns it off.
    CHAT_DEDUP_WINDOW = 300
    #: An ``ack`` waits until this many replicas hold the message (Redis WAIT, at most
    #: CHAT_ACK_TIMEOUT seconds; fewer in time: the sender gets ``unavailable`` and sends again
    #: with the same ``cid``).  0: an ack means "on the primary" only.  With Sentinel, 1: a
    #: failover then promotes a replica that holds every acknowledged message
    #: (docs/durability.md).
    CHAT_ACK_REPLICAS = 0
    CHAT_ACK_TIMEOUT = 1.0
    #: Named rooms one user may be in (the default room does not count).
    CHAT_MAX_ROOMS = 50
    #: Users one socket may watch (``watch`` frame: it is sent their presence).
    CHAT_WATCH_MAX = 500
    #: The room everyone is in.
    CHAT_DEFAULT_ROOM = "lobby"


class ChatTestConfig(TestConfig, ChatConfig):
    CHAT_PRESENCE_TTL = 3.0
    CHAT_SESSION_CHECK_INTERVAL = 2.0
    CHAT_PUBSUB_HEALTH_INTERVAL = 1.0

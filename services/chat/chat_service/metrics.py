"""Chat metrics (prometheus_client; the shared library serves them on ``/metrics`` and sums
them over processes, see ``webchat_common.metrics``)."""
from prometheus_client import Counter, Gauge, Histogram

OPEN_SOCKETS = Gauge("webchat_chat_open_sockets", "Open chat WebSockets.", multiprocess_mode="livesum")
MESSAGES_IN = Counter("webchat_chat_messages_in_total", "Message frames received from clients.")
MESSAGES_OUT = Counter("webchat_chat_messages_out_total", "Stored messages written to sockets (live and replayed).")
DELIVERY = Histogram(
    "webchat_chat_delivery_seconds",
    "From storing/publishing a message to writing it to a socket (oldest message of each write).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
REPLAYED = Counter("webchat_chat_replayed_total", "Messages replayed from history (resume, offline delivery, catch-up).")
FRAMES_REFUSED = Counter("webchat_chat_frames_refused_total", "Client frames refused, by reason.", ["reason"])
SLOW_CONSUMER_CLOSES = Counter("webchat_chat_slow_consumer_closes_total",
                               "Sockets closed because they did not read fast enough.")
REDIS_RECONNECTS = Counter("webchat_chat_redis_reconnects_total", "Pub/sub connections lost and re-made.")
HANDSHAKES_REFUSED = Counter("webchat_chat_handshakes_refused_total", "WebSocket handshakes refused, by reason.",
                             ["reason"])
PRESENCE_SWEPT = Counter("webchat_chat_presence_swept_total",
                         "Chat processes this one found dead (no beat for CHAT_PRESENCE_TTL) and swept.")
PRESENCE_RENEWED = Counter("webchat_chat_presence_renewed_total",
                           "Times this process found itself taken for dead (late, or Redis restarted empty) and held "
                           "its users again under a new id.")

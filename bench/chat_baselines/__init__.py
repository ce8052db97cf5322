"""Baseline chat servers for the chat benchmark (``bench/chat_load.py``): the same job as the
chat service's private messages, written the way the tutorial and Flask-SocketIO would.

- :mod:`.fsio_app` - Flask-SocketIO (gevent, Redis message queue), optionally with durable history
- :mod:`.sock_app` - one in-memory flask-sock process (the tutorial's ``socket_dict``), no Redis per message

Both authenticate a socket by the shared session contract (cookie ``webchat_session`` ->
``session:<sha256>`` JSON in Redis) when it connects, and check the Origin, as the chat service
does; the per-message path is what differs.
"""

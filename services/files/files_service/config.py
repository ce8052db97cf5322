"""Files settings on top of the shared ones (see ``webchat_common.config``).

Every variable the service reads is here, so compose and Kubernetes can set exactly these.
"""
from webchat_common import Config, TestConfig


class FilesConfig(Config):
    #: Directory the media files live in (required).  Behind the gateway nginx reads it too
    #: (the gateway template's ``MEDIA_ROOT``), so both must name the same files.
    MEDIA_ROOT = None
    #: Largest upload, in bytes; beyond it the answer is 413 and nothing is stored.
    MEDIA_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
    #: Largest avatar image, in bytes.
    MEDIA_AVATAR_MAX_BYTES = 2 * 1024 * 1024
    #: True behind the gateway: media are handed out as signed links that nginx checks and
    #: streams, and a request nginx could not verify is answered with a redirect to a fresh
    #: link or with ``X-Accel-Redirect``.  False (run alone): Flask serves the files itself.
    MEDIA_GATEWAY = False
    #: Secret shared with the gateway (its ``MEDIA_URL_SECRET``) to sign media links.  Required
    #: when MEDIA_GATEWAY is true; never committed, generated per deployment.
    MEDIA_URL_SECRET = ""
    #: Longest life of a signed link, in seconds: the bound on how long a copied cookie keeps
    #: reading media (already issued links) after logout.  Links are issued for between
    #: TTL/2 and TTL seconds, on a TTL/2 grid, so a page reloaded soon reuses cached URLs.
    MEDIA_URL_TTL = 120
    #: nginx ``internal`` location that aliases MEDIA_ROOT (must match the gateway template).
    MEDIA_ACCEL_PREFIX = "/_media_internal/"
    #: Most items ``GET /media/`` lists (newest first).
    MEDIA_LIST_LIMIT = 500


class FilesTestConfig(TestConfig, FilesConfig):
    MEDIA_MAX_UPLOAD_BYTES = 256 * 1024
    MEDIA_AVATAR_MAX_BYTES = 64 * 1024
    TRUSTED_PROXIES = 0

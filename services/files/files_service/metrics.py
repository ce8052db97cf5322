"""Prometheus metrics of the files service (see ``webchat_common.metrics`` for the plumbing).

``webchat_files_bytes_served_total`` counts the bytes Python itself sends (the service run
alone, ``send_from_directory``).  Behind the gateway nginx streams the bytes, both for signed
links (Python never sees the request) and after ``X-Accel-Redirect``: those bytes are in the
gateway's access log (``bytes_sent``), not here.  ``webchat_files_served_total{via}`` counts the
media requests Python answered and how: ``flask`` (sent the file), ``x_accel`` (handed it to
nginx), ``redirect`` (sent the browser to a fresh signed link).
"""
from prometheus_client import Counter

BYTES_SERVED = Counter("webchat_files_bytes_served_total", "Bytes of media sent by the files service itself.")
SERVED = Counter("webchat_files_served_total", "Media requests the files service answered, by how.", ["via"])
BYTES_UPLOADED = Counter("webchat_files_bytes_uploaded_total", "Bytes of media stored (uploads and avatars).")
UPLOADS_REFUSED = Counter(
    "webchat_files_uploads_refused_total",
    "Uploads refused, by reason: too_large, bad_type, cross_site, no_file, incomplete.",
    ["reason"],
)

"""A self-signed certificate for 127.0.0.1 and localhost, made when a test runs (with the
``openssl`` command; never stored in the repository)."""
import subprocess


def self_signed(directory):
    """Write ``tls.crt`` and ``tls.key`` (P-256, one day) in ``directory``; return their paths."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key

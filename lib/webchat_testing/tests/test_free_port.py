"""free_port: a port free now, and never the same one twice in a process (a server may bind its
port long after it was chosen, while other servers start)."""
import socket

from webchat_testing import free_port


def test_a_port_is_never_handed_out_twice_and_is_free():
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == 500
    with socket.socket() as s:
        s.bind(("0.0.0.0", ports[-1]))

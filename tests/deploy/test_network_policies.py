"""The network-policies component: who may reach whom, computed from the rendered
NetworkPolicies for every render (without the component, nothing is enforced)."""
from support.deploy import GATEWAY, SERVICES, find, gateway_image_env, gunicorn_port, reachable


def test_network_policies(rendered):
    allowed = reachable(rendered["objects"])
    everyone = SERVICES + (GATEWAY, "redis", "outside")
    if not find(rendered["objects"], "NetworkPolicy"):
        assert ("outside", "redis", 6379) in allowed  # nothing is enforced without the component
        return
    gateway_port = int(gateway_image_env()["GATEWAY_PORT"])
    expected = {(src, GATEWAY, gateway_port) for src in everyone}
    expected |= {(GATEWAY, s, gunicorn_port()) for s in SERVICES}
    expected |= {(s, "redis", 6379) for s in SERVICES}
    assert allowed == expected

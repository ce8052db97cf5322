"""Auth and files on a Redis Cluster (``REDIS_URL=redis+cluster://``, docs/cluster.md): the real
services under gunicorn on a :class:`ClusterSet` of six redis-server processes, driven over
HTTP; and a kill -9 of the primary that holds a logged-in session.

What a failover promises a session (sessions are written without ``WAIT``): one its primary's
replica had received survives (the replica is promoted with it); one written in the last
milliseconds before the kill may be lost, and its user logs in again.  The test waits for the
replica to hold the session before the kill, so it checks the first promise, and measures how
long requests fail (503, never a logout) until the promoted replica serves them."""
import time

import requests

from support.web import Browser, tiny_png
from webchat_common import keys
from webchat_common.sessions import session_key

JSON = {"Accept": "application/json"}


class Person(Browser):
    """A browser of the auth service that also talks to the files service (another port of
    the same host: the session cookie goes to both, as behind the gateway)."""

    def __init__(self, services):
        super().__init__(services.auth.url)
        self.files = services.files.url

    def upload(self, data, filename="pic.png", path="/media/"):
        return self.http.post(self.files + path, files={"file": (filename, data)},
                              headers={**JSON, "X-CSRF-Token": self.me()["csrf_token"]}, timeout=10)

    def media(self, path="/media/"):
        return self.http.get(self.files + path, headers=JSON, timeout=10)


def name_on_another_primary(cluster, prefix, than):
    """A user name whose account is not on the primary of key ``than``: so a registration
    writes to two primaries."""
    other = cluster.primary_of(than)
    return next(f"{prefix}{i}" for i in range(1000) if cluster.primary_of(keys.user(f"{prefix}{i}")) is not other)


def test_auth_and_files_run_on_a_cluster(cluster_services):
    cluster = cluster_services.cluster
    for svc in (cluster_services.auth, cluster_services.files):
        ready = requests.get(svc.url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"status": "ok", "redis": "up"}
    alice, bob = Person(cluster_services), Person(cluster_services)
    a = name_on_another_primary(cluster, "alice", keys.USERS)
    b = name_on_another_primary(cluster, "bob", keys.USERS)
    assert alice.register(a).status_code == 303 and bob.register(b).status_code == 303
    assert alice.me()["user"] == a
    assert alice.register(a.upper()).status_code == 409
    assert alice.logout().status_code in (302, 303) and alice.get("/api/me").status_code == 401
    assert alice.login(a, password="wrong password").status_code == 401  # the throttle counts it
    assert alice.login(a).status_code == 302 and alice.me()["user"] == a
    listed = alice.get("/api/users", headers=JSON).json()["users"]
    assert a in listed and b in listed

    png = tiny_png()
    up = alice.upload(png)
    assert up.status_code == 201, up.text
    name = up.json()["name"]
    assert [m["name"] for m in alice.media().json()["media"]] == [name]
    assert alice.media(f"/media/{name}").content == png
    assert bob.media(f"/media/{name}").status_code == 404
    shared = alice.http.post(alice.files + f"/media/{name}/share", json={"users": [b, "nobody-here"]},
                             headers={**JSON, "X-CSRF-Token": alice.me()["csrf_token"]}, timeout=10)
    assert shared.status_code == 200 and shared.json()["added"] == [b.lower()]
    assert bob.media(f"/media/{name}").content == png
    first = alice.upload(png, "me.png", "/media/avatar").json()["name"]
    second = alice.upload(png, "me2.png", "/media/avatar").json()["name"]
    assert bob.media(f"/media/{second}").content == png
    assert bob.media(f"/media/{first}").status_code == 404  # the old avatar's records are gone

    metrics = requests.get(cluster_services.auth.url + "/metrics", timeout=5).text
    assert "webchat_auth_active_sessions" in metrics
    assert bob.logout().status_code in (302, 303)
    assert bob.get("/api/me").status_code == 401 and bob.media().status_code == 401


def test_a_session_survives_the_failover_of_its_primary(cluster_services):
    cluster = cluster_services.cluster
    carol = Person(cluster_services)
    name = name_on_another_primary(cluster, "carol", keys.USERS)
    assert carol.register(name).status_code == 303
    upload = carol.upload(tiny_png())
    assert upload.status_code == 201
    key = session_key(carol.sid)
    primary = cluster.primary_of(key)
    deadline = time.monotonic() + 10
    while not cluster.replicated(primary):  # the session reached the replica (see the docstring)
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)
    try:
        killed = cluster.kill_primary(key)
        start = time.monotonic()
        statuses = []
        while True:
            resp = carol.get("/api/me")
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                break
            assert resp.status_code == 503, resp.text  # unavailable, never logged out
            assert time.monotonic() - start < 20, statuses
            time.sleep(0.1)
        recovered = time.monotonic() - start
        print(f"\nsession's primary killed: requests answered again after {recovered:.1f} s "
              f"({statuses.count(503)} answered 503 meanwhile)")
        assert resp.json()["user"] == name
        assert cluster.wait_failover(killed) is cluster.primary_of(key)
        assert carol.media(upload.json()["url"]).status_code == 200
        assert carol.upload(tiny_png()).status_code == 201  # writes too, on every primary
        assert carol.logout().status_code in (302, 303) and carol.get("/api/me").status_code == 401
        for svc in (cluster_services.auth, cluster_services.files):
            assert requests.get(svc.url + "/readyz", timeout=5).status_code == 200
    finally:
        cluster.heal()


def test_with_every_node_down_requests_get_503_and_work_again_after(cluster_services):
    """With no node reachable, redis-py's Cluster client raises its own exception (not a
    RedisError): the services answer it as Redis being down, not as a bug."""
    cluster = cluster_services.cluster
    dana = Person(cluster_services)
    name = name_on_another_primary(cluster, "dana", keys.USERS)
    assert dana.register(name).status_code == 303
    cluster.stop()
    try:
        for svc in (cluster_services.auth, cluster_services.files):
            ready = requests.get(svc.url + "/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["redis"] == "down"
        assert dana.get("/api/me").status_code == 503
        assert dana.media().status_code == 503
    finally:
        cluster.start()
    deadline = time.monotonic() + 20
    while dana.get("/api/me").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert dana.me()["user"] == name and dana.media().status_code == 200

"""Fixtures of the integration tests: the whole stack (real Redis, gunicorn services, nginx) on
free ports, started by the same code as ``make run``; the chat tests' and the fault suite's own
stacks; browsers; gunicorn around the ops test app.  Every fixture of tests/ is here; the
helpers they use are in ``tests/support`` and ``webchat_testing``.

The chat suites run on one Redis and on a Redis Cluster (``chat_stack`` by topology, see
:func:`pytest_generate_tests`) where chat's own behaviour over Redis is tested:
``test_chat.py``, ``test_conversations.py`` and ``test_longpoll.py`` (messages, rooms, resuming
from positions, presence, history, read markers, edits, long-polling, a lost pub/sub
connection, Redis coming back empty; about 2 minutes on one Redis, as long again on the
Cluster).  The other users of ``chat_stack`` run on one Redis only, so that ``make test``
stays short: the browser suites (``test_chat_page*.py``, about 70 s) add the page's own code,
which does not see the topology, over server paths the three suites above already drive;
``test_chat_hostile.py`` (about 20 s) is hypothesis's frames, mostly refused by chat's parsers
before any Redis call, and a re-sent ``cid`` stored once is checked on a Cluster by the fault
suite, under a failover (scenario h, ``cluster_stack``)."""
import re
from types import SimpleNamespace

import pytest

from localstack import Stack
from support.chat import Person
from support.faults import FAULT_ENV, FAULT_FIGURES
from support.gunicorn import Gunicorn
from support.tls import self_signed
from support.web import Browser
from webchat_common.redis_store import open_client
from webchat_testing.cluster import ClusterSet
from webchat_testing.sessions import COOKIE


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack"), chat_replicas=2) as s:
        yield s


@pytest.fixture
def gateway(stack):
    return stack.url


@pytest.fixture
def browser(gateway):
    return Browser(gateway)


@pytest.fixture
def member(gateway, username):
    """A Browser registered (so logged in) as ``username``."""
    b = Browser(gateway)
    assert b.register(username).status_code == 303
    return b


_counter = iter(range(10**6))


@pytest.fixture
def username(request):
    """A fresh user name per test (the stack is shared by the whole session)."""
    return f"u{next(_counter)}_{abs(hash(request.node.name)) % 10**6}"


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (the system package) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


# ---- the gateway's edge settings (tests/test_gateway_edge.py) -------------------------------

#: The range the edge stack's gateway trusts as proxies: loopback addresses that
#: support.web.new_client_address() never hands out (its third byte stays small).
EDGE_TRUSTED = "127.0.200.0/24"


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory):
    """A stack whose gateway trusts EDGE_TRUSTED's X-Forwarded-For and serves HTTPS with a
    self-signed certificate made now (``edge_stack.env["GATEWAY_TLS_CERT_FILE"]``), and whose
    services set the session cookie ``Secure``."""
    d = tmp_path_factory.mktemp("edgestack")
    cert, key = self_signed(d)
    env = {"GATEWAY_TRUSTED_PROXIES": EDGE_TRUSTED, "GATEWAY_TLS_CERT_FILE": str(cert),
           "GATEWAY_TLS_KEY_FILE": str(key), "SESSION_COOKIE_SECURE": "true"}
    with Stack(d / "stack", chat_replicas=1, env=env) as s:
        yield s


# ---- chat (issue 4) --------------------------------------------------------------------------

#: Chat settings for the chat tests' own stack: short presence TTL, pings and checks, so that
#: expiry, keepalive and limits show within seconds (production defaults: docs/chat.md).
CHAT_TEST_ENV = {
    "CHAT_PRESENCE_TTL": "3",
    "CHAT_SESSION_CHECK_INTERVAL": "2",
    "CHAT_PUBSUB_HEALTH_INTERVAL": "1",
    "CHAT_PING_INTERVAL": "4",
    "CHAT_RATE_LIMIT": "20",
    "CHAT_RATE_BURST": "30",
    "CHAT_RATE_STRIKES": "5",
    "CHAT_MAX_FRAME": "8192",
    "CHAT_SEND_QUEUE": "32",
    "CHAT_SEND_TIMEOUT": "3",
    "CHAT_SOCKET_SNDBUF": "8192",
    "CHAT_HISTORY_AGE": "3600",
    "CHAT_MAX_SOCKETS_PER_USER": "8",
    "CHAT_EDIT_WINDOW": "4",
    "CHAT_TYPING_MAX_MEMBERS": "3",
    "CHAT_POLL_TIMEOUT": "3",
    "CHAT_POLL_GRACE": "2",
}


#: The chat suites that run on each of :data:`CHAT_TOPOLOGIES` (every other user of
#: ``chat_stack`` runs on the first only; why, in this module's docstring).
CHAT_SUITES_ON_EVERY_TOPOLOGY = {"test_chat.py", "test_conversations.py", "test_longpoll.py"}
CHAT_TOPOLOGIES = ("single", "cluster")


def pytest_generate_tests(metafunc):
    """``chat_stack`` by topology: a test of :data:`CHAT_SUITES_ON_EVERY_TOPOLOGY` runs once per
    topology (``[single]``, ``[cluster]``), any other test of chat on one Redis (``[single]``)."""
    if "chat_stack" in metafunc.fixturenames:
        every = metafunc.definition.path.name in CHAT_SUITES_ON_EVERY_TOPOLOGY
        metafunc.parametrize("chat_stack", CHAT_TOPOLOGIES if every else CHAT_TOPOLOGIES[:1],
                             indirect=True, scope="session")


@pytest.fixture(scope="session")
def chat_stack(request, tmp_path_factory):
    """A stack of its own for the chat tests (two chat processes behind nginx), because they
    kill and restart chat processes and use short timeouts; on the REDIS_TOPOLOGY its
    parameter names (:func:`pytest_generate_tests`).  pytest runs the tests of one topology
    together, and stops that stack before it starts the next."""
    topology = request.param
    with Stack(tmp_path_factory.mktemp(f"chatstack-{topology}"), chat_replicas=2, env=CHAT_TEST_ENV,
               redis_topology=topology) as s:
        yield s


@pytest.fixture(scope="session")
def ha_stack(tmp_path_factory):
    """A stack on Redis with automatic failover (REDIS_TOPOLOGY=sentinel: a primary, two
    replicas, three Sentinels; chat acknowledges a message once a replica holds it) and the
    fault suite's settings, for the failover tests (tests/test_sentinel.py, and the fault
    suite's failover scenario), which kill its primary and then ``heal()`` it."""
    with Stack(tmp_path_factory.mktemp("hastack"), chat_replicas=2, env=FAULT_ENV,
               redis_topology="sentinel") as s:
        yield s


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(FAULT_FIGURES, [])
    if lines:
        terminalreporter.write_sep("-", "fault scenarios (tests/test_faults.py)")
        for text in lines:
            terminalreporter.write_line(text)


@pytest.fixture
def r(chat_stack):
    """A client of the chat stack's Redis, one Redis or a Cluster (the services' own
    ``open_client``; a command without a key that must reach every primary of a Cluster goes
    through ``support.chat``: ``shard_subscribers``, ``kill_subscribers``)."""
    client = open_client(chat_stack.redis.url, decode_responses=True)
    yield client
    client.close()


# ---- chat: a hostile pair, the chat page ----------------------------------------------------

@pytest.fixture(scope="module")
def hostile_pair(chat_stack):
    mallory, bob = Person(chat_stack), Person(chat_stack)
    sm = mallory.connect()
    sb = bob.connect_on(sm.node)
    yield sm, sb, bob.name
    sm.close()
    sb.close()


@pytest.fixture
def chat_page(chromium, chat_stack):
    """Open /chat/ in a fresh browser context as a newly registered person (``viewport``: its
    size, e.g. a phone's; ``init_script``: JavaScript run in every page of the context before
    the page's own; ``permissions``: granted to the gateway's origin, e.g. ``["notifications"]``),
    or as another tab of an open page's ``context``.  Every console error and uncaught exception
    of every page opened is a failure of the test, except what the test allows
    (``chat_page.allow(regex)``)."""
    yield from page_opener(chromium, chat_stack)


@pytest.fixture
def ha_page(chromium, ha_stack):
    """``chat_page`` on the stack with Redis failover (``ha_stack``)."""
    yield from page_opener(chromium, ha_stack)


def page_opener(chromium, stack):
    """What ``chat_page`` yields, on ``stack``; then the pages' console errors are checked."""
    from playwright.sync_api import expect

    contexts, errors, allowed = [], [], []

    def open_as(person, viewport=None, context=None, init_script=None, permissions=None):
        if context is None:
            context = chromium.new_context(viewport=viewport) if viewport else chromium.new_context()
            contexts.append(context)
            context.add_cookies([{"name": COOKIE, "value": person.browser.sid, "url": stack.url}])
            if init_script:
                context.add_init_script(init_script)
            if permissions:
                context.grant_permissions(permissions, origin=stack.url)
        page = context.new_page()
        page.on("console", lambda m: errors.append(f"{person.name}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"{person.name}: uncaught {exc}"))
        page.set_default_timeout(10_000)
        page.goto(stack.url + "/chat/")
        expect(page.locator("#chat-status")).to_have_attribute("data-state", "online")
        return page

    open_as.allow = lambda pattern: allowed.append(re.compile(pattern))
    yield open_as
    for c in contexts:
        c.close()
    unexpected = [e for e in errors if not any(a.search(e) for a in allowed)]
    assert not unexpected, "console errors: " + "; ".join(unexpected)


# ---- the fault suite (tests/test_faults.py) --------------------------------------------------

@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("faultstack"), chat_replicas=2, env=FAULT_ENV) as s:
        yield s


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory):
    """A stack on a Redis Cluster (REDIS_TOPOLOGY=cluster: three primaries with a replica each;
    chat acknowledges a message once a replica of its shard holds it) with the fault suite's
    settings, for the fault suite's Cluster failover scenario, which kills a primary and starts
    it again (``heal()``)."""
    with Stack(tmp_path_factory.mktemp("clusterstack"), chat_replicas=2, env=FAULT_ENV,
               redis_topology="cluster") as s:
        yield s


@pytest.fixture
def report(request):
    """Write a figures line now (past pytest's capture) and again in the terminal summary."""
    def write(text):
        request.config.stash.setdefault(FAULT_FIGURES, []).append(text)
        capman = request.config.pluginmanager.getplugin("capturemanager")
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line("faults: " + text)
    return write


# ---- gunicorn around tests/ops_app.py (tests/test_ops_lifecycle.py) ---------------------------

@pytest.fixture
def gunicorn(tmp_path, redis_url):
    started = []

    def start(**kw):
        g = Gunicorn(tmp_path, redis_url, **kw)
        started.append(g)
        return g.start()

    yield start
    for g in started:
        g.stop()


# ---- auth and files on a Redis Cluster (tests/test_cluster_services.py) ----------------------

@pytest.fixture(scope="module")
def cluster_services(tmp_path_factory):
    """A :class:`ClusterSet` (3 primaries, 3 replicas) with auth and files under gunicorn on it,
    each run as its image runs it (no gateway, no chat: chat does not run on a Cluster yet)."""
    tmp = tmp_path_factory.mktemp("cluster")
    cluster = ClusterSet(tmp / "redis").start()
    media = tmp / "media"
    media.mkdir()
    auth = Gunicorn(tmp, cluster.url, app=None, name="auth")
    files = Gunicorn(tmp, cluster.url, app=None, name="files", MEDIA_ROOT=str(media))
    try:
        auth.start()
        files.start()
        yield SimpleNamespace(cluster=cluster, auth=auth, files=files)
    finally:
        auth.stop()
        files.stop()
        cluster.stop()

"""Running chat's Lua scripts (:mod:`.scripts`) the same way on one Redis, Sentinel and a
Redis Cluster.

Rule: a script is sent by its SHA (``EVALSHA``), and queued in a pipeline as a plain command,
because redis-py's Cluster pipeline refuses ``evalsha()`` and routes an ``EVALSHA`` command by
its keys.  A server that does not know a script (new, restarted, or a replica promoted:
scripts are not replicated) answers ``NOSCRIPT``: the script is loaded (on every primary of a
Cluster) and that call alone is run again, whether it was called directly or in a
:class:`Pipeline`.
"""
from redis.exceptions import NoScriptError


class Lua:
    """``Lua(redis, text)``: ``lua(keys, args)`` runs it; ``lua(keys, args, client=pipe)`` queues
    it in a :class:`Pipeline`."""

    def __init__(self, redis, text):
        self.redis = redis
        self.script = redis.register_script(text)

    @property
    def sha(self):
        return self.script.sha

    def __call__(self, keys=(), args=(), client=None):
        if client is not None:
            return client.script(self, keys, args)
        try:
            return self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.load()
            return self.redis.evalsha(self.sha, len(keys), *keys, *args)

    def load(self):
        """Load the script (on a Cluster: on every primary)."""
        self.script.sha = self.redis.script_load(self.script.script)


class Pipeline:
    """A pipeline without a transaction (``Pipeline(redis)``) whose commands are redis-py's and
    whose Lua calls are :class:`Lua`'s; :meth:`execute` runs it in one round trip."""

    def __init__(self, redis):
        self._pipe = redis.pipeline(transaction=False)
        self._scripts = {}  # position in the pipeline -> (Lua, keys, args)
        self._queued = 0

    def __getattr__(self, name):
        command = getattr(self._pipe, name)

        def queue(*args, **kwargs):
            self._queued += 1
            return command(*args, **kwargs)
        return queue

    def script(self, lua, keys, args):
        self._scripts[self._queued] = (lua, keys, args)
        self._queued += 1
        self._pipe.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)

    def execute(self, raise_on_error=True):
        """The answers in order (with ``raise_on_error``, the first error is raised instead)."""
        results = self._pipe.execute(raise_on_error=False)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        for i in again:
            lua, keys, args = self._scripts[i]
            try:
                results[i] = lua(keys, args)
            except Exception as exc:  # noqa: BLE001 - answered like the pipeline's own errors
                results[i] = exc
        if raise_on_error:
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return results

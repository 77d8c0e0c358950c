"""The network's faults between one Redis client (the API, or a worker) and Redis, for tests.

``netem_unavailable()`` says why this machine cannot inject them with network namespaces and
``tc netem`` (the kernel of the CI sandbox is built without ``sch_netem``); ``FaultyLink`` is the
proxy variant: a TCP proxy in front of Redis that one client's REDIS_URL names, so each link can be
faulted alone. Its faults act as a lossy network acts on a TCP connection: bytes are delayed, never
dropped mid-stream (TCP retransmits):

* latency: every chunk, each way, is delivered ``latency_s`` late (order kept);
* loss: a chunk is "lost" with probability ``loss`` and arrives after a retransmission timeout
  (200 ms, Linux's minimum RTO, doubled for each consecutive loss on that direction);
* partition: nothing moves either way and new connections get no further than the TCP handshake;
  what the client sent meanwhile stays in the socket buffers and reaches Redis after ``heal()``, as
  TCP's retransmissions would (a partitioned client's late writes do arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import threading

RTO_S = 0.2


def netem_unavailable() -> str | None:
    """Why namespaces with ``tc netem`` cannot be used here, or None if they can."""
    if not (shutil.which("unshare") and shutil.which("tc")):
        return "no unshare or tc (iproute2) on this machine"
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up && tc qdisc add dev lo root netem delay 1ms"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"this sandbox cannot use netem in a network namespace ({probe.stderr.strip() or probe.returncode})"
    return None


class FaultyLink:
    """A proxy from ``127.0.0.1:port`` to Redis at ``upstream`` (host, port), run on its own thread."""

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0):
        self.upstream = upstream
        self.latency_s, self.loss = 0.0, 0.0
        self.connections = 0
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        listening = socket.create_server(("127.0.0.1", 0))
        self.port = listening.getsockname()[1]
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(listening, started), name=f"faulty-link-{self.port}", daemon=True
        )
        self._thread.start()
        started.wait()

    def url(self, scheme: str = "redis", credentials: str = "") -> str:
        return f"{scheme}://{credentials}127.0.0.1:{self.port}/0"

    # ------------------------------------------------------------------ faults

    def set(self, *, latency_s: float = 0.0, loss: float = 0.0) -> None:
        self.latency_s, self.loss = latency_s, loss

    def partition(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def clear(self) -> None:
        self.set()
        self.heal()

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    # ------------------------------------------------------------------ the proxy

    def _run(self, listening: socket.socket, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._open = asyncio.Event()
        self._open.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, sock=listening))
        started.set()
        self._loop.run_forever()

    def _spawn(self, coroutine) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_reader, client_writer) -> None:
        self.connections += 1
        await self._open.wait()  # partitioned: the client's connect "succeeds", then nothing answers
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        self._spawn(self._pipe(client_reader, server_writer))
        self._spawn(self._pipe(server_reader, client_writer))

    def _delay(self, losses: int) -> tuple[float, int]:
        """This chunk's extra delay and the direction's run of consecutive losses."""
        if self.loss and self._random.random() < self.loss:
            return self.latency_s + RTO_S * 2**losses, losses + 1
        return self.latency_s, 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            due, losses = 0.0, 0
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    await queue.put(None)
                    return
                delay, losses = self._delay(losses)
                due = max(self._loop.time() + delay, due)  # TCP delivers in order
                await queue.put((due, data))

        reading = self._loop.create_task(read())
        self._tasks.add(reading)
        reading.add_done_callback(self._tasks.discard)
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(Exception):
                writer.close()

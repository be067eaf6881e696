"""A TCP proxy on 127.0.0.1 that delays every chunk by D ms each way: a long link on loopback.

Every chunk read from one side is written to the other ``delay`` seconds after it arrived, in
order, with no bandwidth limit: a round trip through the proxy costs ``2 * delay`` more, and
a window of data in flight is the only thing that fills such a link (the bandwidth-delay
product). Reading never waits for the delayed writes, so throughput is bounded only by the
receiver's window and the proxy's CPU; what is queued in one direction is bounded by
``--max-queued`` (reading pauses past it) so a stalled side cannot grow the proxy without end.

    python scripts/delayproxy.py --listen 8081 --target 127.0.0.1:8080 --delay-ms 25

``start_delay_proxy(target_port, delay_s)`` runs the same proxy in a child process (its own
interpreter, so the proxy's CPU does not share a GIL with the caller) and returns the port it
listens on and a function that stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
from typing import Callable

CHUNK = 256 << 10
MAX_QUEUED = 64 << 20


class _Pipe:
    """One direction of one connection: chunks read now, written ``delay`` seconds later."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float, max_queued: int) -> None:
        self.reader, self.writer, self.delay = reader, writer, delay
        self.max_queued = max_queued
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.more = asyncio.Event()  # something queued (or the end)
        self.room = asyncio.Event()  # the queue is under its bound
        self.room.set()
        self.ended = False

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(CHUNK)
                if not data:
                    break
                self.queue.append((loop.time() + self.delay, data))
                self.queued += len(data)
                if self.queued >= self.max_queued:
                    self.room.clear()
                self.more.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.ended = True
            self.more.set()

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self.queue:
                    if self.ended:
                        break
                    self.more.clear()
                    await self.more.wait()
                    continue
                due, data = self.queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # Everything due by now goes out in one write.
                now = loop.time()
                out = []
                while self.queue and self.queue[0][0] <= now:
                    out.append(self.queue.popleft()[1])
                size = sum(map(len, out))
                self.writer.write(b"".join(out) if len(out) > 1 else out[0])
                await self.writer.drain()
                self.queued -= size
                if self.queued < self.max_queued:
                    self.room.set()
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except (ConnectionError, OSError):
            pass


async def _connection(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                      target: tuple[str, int], delay: float, max_queued: int) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return
    up = _Pipe(client_r, server_w, delay, max_queued)
    down = _Pipe(server_r, client_w, delay, max_queued)
    try:
        await asyncio.gather(up.read(), up.write(), down.read(), down.write())
    finally:
        for w in (server_w, client_w):
            with contextlib.suppress(Exception):
                w.close()


async def serve(listen: int, target: tuple[str, int], delay: float,
                max_queued: int = MAX_QUEUED, ready: Callable[[int], None] | None = None) -> None:
    """Proxy 127.0.0.1:``listen`` (0: any free port) to ``target`` until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _connection(r, w, target, delay, max_queued), "127.0.0.1", listen)
    port = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(port)
    async with server:
        await server.serve_forever()


def start_delay_proxy(target_port: int, delay_s: float) -> tuple[int, Callable[[], None]]:
    """A proxy to 127.0.0.1:``target_port`` delaying each chunk ``delay_s`` each way, in a
    child process: the port it listens on, and a function that stops it."""
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--listen", "0",
         "--target", f"127.0.0.1:{target_port}", "--delay-ms", str(delay_s * 1000)],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening "):
        process.kill()
        process.wait()
        raise RuntimeError("the delay proxy did not start")
    port = int(line.split()[1])

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    return port, stop


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("give the target as HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True,
                        help="port to listen on, on 127.0.0.1 (0: any free port)")
    parser.add_argument("--target", type=_target, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True,
                        help="delay of every chunk, each way (25 makes a 50 ms round trip)")
    parser.add_argument("--max-queued", type=int, default=MAX_QUEUED,
                        help="bytes queued in one direction before reading pauses")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def ready(port: int) -> None:
        print(f"listening {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(serve(args.listen, args.target, args.delay_ms / 1000, args.max_queued,
                          ready))


if __name__ == "__main__":
    main()

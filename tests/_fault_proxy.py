"""A fault-injecting TCP proxy for tests, in the test's event loop, on a free 127.0.0.1 port: it
forwards to a target (a broker) and, on demand, cuts the connection in the middle of the byte
stream (so mid-packet, almost surely), splits what it forwards into small segments with delays,
or stops reading from one side (a stalled reader: the sender's socket buffers fill).

    proxy = await FaultProxy(broker.port).start()
    proxy.split = True                 # 1..16-byte segments
    proxy.delay = 0.002                # up to 2 ms before each segment
    proxy.cut("up", after=100)         # close both sides once 100 more bytes went agent → broker
    proxy.stall("down")                # stop reading from the broker; proxy.resume("down")
    await proxy.stop()

"up" is client → target, "down" target → client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

LOOPBACK = "127.0.0.1"


class FaultProxy:
    def __init__(self, target_port: int, *, seed: int = 14) -> None:
        self.target_port = target_port
        self.port = 0
        self.split = False
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self.cuts = 0  # connections cut
        self._random = random.Random(seed)
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for event in self._flowing.values():
            event.set()
        self._cut: dict[str, int | None] = {"up": None, "down": None}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self, direction: str, *, after: int) -> None:
        """Close both sides of the current connection once `after` more bytes went `direction`
        (the first `after` of them forwarded, the rest dropped)."""
        self._cut[direction] = after

    def stall(self, direction: str) -> None:
        self._flowing[direction].clear()

    def resume(self, direction: str) -> None:
        self._flowing[direction].set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            target_r, target_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, target_w)
        self._writers.update(pair)
        pumps = [
            asyncio.create_task(self._pump(client_r, target_w, "up", pair)),
            asyncio.create_task(self._pump(target_r, client_w, "down", pair)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in pair:
                writer.transport.abort()
                self._writers.discard(writer)
            self._tasks.difference_update(pumps)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: str,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await self._flowing[direction].wait()
                data = await src.read(65536)
                if not data:
                    return
                left = self._cut[direction]
                if left is not None and len(data) >= left:
                    self._cut[direction] = None
                    self.cuts += 1
                    if left:
                        dst.write(data[:left])
                        await dst.drain()
                    for writer in pair:
                        writer.transport.abort()  # both sides see the connection die
                    return
                if left is not None:
                    self._cut[direction] = left - len(data)
                await self._forward(data, dst)

    async def _forward(self, data: bytes, dst: asyncio.StreamWriter) -> None:
        if not self.split and not self.delay:
            dst.write(data)
            await dst.drain()
            return
        pos = 0
        while pos < len(data):
            size = self._random.randint(1, 16) if self.split else len(data)
            if self.delay:
                await asyncio.sleep(self._random.random() * self.delay)
            dst.write(data[pos : pos + size])
            await dst.drain()
            pos += size

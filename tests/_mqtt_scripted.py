"""A scripted MQTT broker for tests: a plain asyncio TCP server on 127.0.0.1 that speaks just
enough MQTT to put the client in the situations real brokers will not produce on demand (stay
silent, stop reading, claim a session, send QoS 2, garbage or oversized packets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from picogate.mqtt._codec import decode_varint

Script = Callable[["ScriptedBroker", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedBroker:
    """A TCP server speaking just enough MQTT: it answers CONNECT with `connack`, records the
    packets it receives as (first byte, body), and runs `script(self, reader, writer)`."""

    def __init__(
        self,
        connack: bytes | None = b"\x20\x02\x00\x00",
        script: Script | None = None,
    ) -> None:
        self.connack = connack
        self.script = script
        self.received: list[tuple[int, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        header = b""
        while True:
            header += await reader.readexactly(1)
            got = decode_varint(header)
            if got is not None:
                break
        return first, await reader.readexactly(got[0])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            self.received.append(await self.read_packet(reader))  # CONNECT
            if self.connack is not None:
                writer.write(self.connack)
            if self.script is not None:
                await self.script(self, reader, writer)
            else:
                while True:
                    self.received.append(await self.read_packet(reader))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()

    def types(self) -> list[int]:
        return [first >> 4 for first, _ in self.received]

    def packets(self, packet_type: int) -> list[bytes]:
        """The bodies of the received packets of one type (3 PUBLISH, 8 SUBSCRIBE, ...)."""
        return [body for first, body in self.received if first >> 4 == packet_type]


async def read_all(
    broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A script: record every packet, answer none."""
    while True:
        broker.received.append(await broker.read_packet(reader))


def publish_id(body: bytes) -> bytes:
    """The packet id of a QoS 1 PUBLISH's body (MQTT 3.1.1 or 5)."""
    topic_len = int.from_bytes(body[:2], "big")
    return body[2 + topic_len : 4 + topic_len]

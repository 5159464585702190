"""MQTT clients compared: picogate's own client vs gmqtt vs paho-mqtt, QoS 1 to a local mosquitto.

    python bench/mqtt_clients.py [--count 60000] [--payload 60] [--window 1000] [--repeat 3]
                                 [--rate 0,15000] [--burst 500] [--loop uvloop|asyncio]
                                 [--protocol 3.1.1,5] [--clients ours,ours-sink,gmqtt,paho]

Starts one mosquitto on a free loopback port, then runs each client in its own Python process
(so that the CPU measured is that client's alone: `time.process_time()` of the process, every
thread included) publishing `count` QoS 1 messages of `payload` bytes over 1,500 topics, with at
most `window` unacknowledged.  The clock runs from the first publish to the last PUBACK, after the
connection is made.  Runs are repeated, the clients taking turns, and the median is printed with
the best run.

Two regimes: `--rate 0`, as fast as each client goes (the window is then full most of the time
and client and broker ping-pong small batches), and `--rate 15000`, the agent's design load,
published in bursts of `--burst` messages as the sink delivers outbox batches.  CPU per message
differs between them: compare clients within one regime.

The clients:

- ours       picogate.mqtt._client.MqttClient, `await publish()` for every message (it waits for
             a free slot in its in-flight window), the futures awaited as they complete, oldest
             first: the client's own cost.
- ours-sink  the same client driven the way the agent's sink drives it: batches of 500 messages,
             each batch's futures gathered, up to 4 batches in flight (RunningSink's defaults), so
             the `asyncio.gather` bookkeeping is included.
- gmqtt      gmqtt 0.8.0, the window kept with a semaphore released on each PUBACK (as the old
             wrapper did through gmqtt's storage hook).
- paho       paho-mqtt 2.x in one thread: publish up to the window, then `loop()` (its fastest
             pattern here; paho's network thread is slower still).

The broker: `max_queued_messages 0` (never drop), `max_inflight_messages` = the window (mosquitto
announces it to MQTT 5 clients as its Receive Maximum; the default of 20 would cap every MQTT 5
client at 20 messages per round trip), `set_tcp_nodelay true` (with Nagle's algorithm on the
broker's socket, small PUBACK writes wait for our delayed ACKs), `user root` when run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
TOPICS = [f"picogate/bench/data/dev{i // 30:04d}/r{i % 30:02d}" for i in range(1500)]


def _payload(size: int) -> bytes:
    body = b'{"v":12345,"ts":1700000000000,"unit":"C","q":"good"}'
    return (body + b" " * max(0, size - len(body)))[:size]


# --------------------------------------------------------------------------------------------------
# the clients (each runs in a child process: --child NAME)
# --------------------------------------------------------------------------------------------------


class _Pace:
    """`rate` 0: as fast as the client goes.  Otherwise bursts of `burst` messages, one every
    burst / rate seconds (the agent's sink delivers outbox batches, not a steady trickle)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst if rate else 1 << 62
        self.t0 = time.perf_counter()

    def delay(self, sent: int) -> float:
        """Seconds to wait before the burst that starts after `sent` messages."""
        if not self.rate or sent % self.burst:
            return 0.0
        return max(0.0, self.t0 + sent / self.rate - time.perf_counter())


async def _ours(
    port: int, count: int, window: int, payload: bytes, protocol: str, pace: _Pace
) -> dict[str, Any]:
    from picogate.mqtt._client import MqttClient

    client = MqttClient(
        host=LOOPBACK, port=port, client_id="bench-ours", protocol=protocol, max_inflight=window
    )
    await client.connect()
    publish = client.publish
    futures: list[asyncio.Future[None]] = []
    append = futures.append
    n = len(TOPICS)
    burst = pace.burst
    c0, t0 = time.process_time(), time.perf_counter()
    pace.t0 = t0
    for i in range(count):
        if i % burst == 0 and i and (wait := pace.delay(i)):
            await asyncio.sleep(wait)
        fut = await publish(TOPICS[i % n], payload, qos=1)
        assert fut is not None
        append(fut)
        if len(futures) >= 2 * window:  # the oldest are acknowledged by now: collect them
            for old in futures[:window]:
                await old
            del futures[:window]
    for fut in futures:
        await fut
    t1, c1 = time.perf_counter(), time.process_time()
    window = client.inflight_limit
    await client.disconnect()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "window": window}


async def _ours_sink(
    port: int, count: int, window: int, payload: bytes, protocol: str, pace: _Pace
) -> dict[str, Any]:
    from picogate.mqtt._client import MqttClient

    client = MqttClient(
        host=LOOPBACK, port=port, client_id="bench-ours-sink", protocol=protocol, max_inflight=window
    )
    await client.connect()
    publish = client.publish
    n = len(TOPICS)
    batch, batches = 500, 4

    async def deliver(start: int, stop: int) -> None:
        futures = []
        for i in range(start, stop):
            fut = await publish(TOPICS[i % n], payload, qos=1)
            if fut is not None:
                futures.append(fut)
        await asyncio.gather(*futures)

    c0, t0 = time.process_time(), time.perf_counter()
    pace.t0 = t0
    inflight: set[asyncio.Task[None]] = set()
    for start in range(0, count, batch):
        if len(inflight) >= batches:
            _done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        if pace.rate and start:
            await asyncio.sleep(max(0.0, t0 + start / pace.rate - time.perf_counter()))
        inflight.add(asyncio.create_task(deliver(start, min(count, start + batch))))
    await asyncio.gather(*inflight)
    t1, c1 = time.perf_counter(), time.process_time()
    window = client.inflight_limit
    await client.disconnect()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "window": window}


class _GmqttAcks:
    """gmqtt's in-flight storage interface: it calls push on publish and remove on PUBACK."""

    def __init__(self, on_ack: Any) -> None:
        self.on_ack = on_ack

    def push_message(self, mid: int, raw_package: bytes) -> None:
        pass

    def remove_message_by_mid(self, mid: int) -> None:
        self.on_ack(mid)

    @property
    def is_empty(self) -> bool:
        return True

    def get_all(self) -> list[Any]:
        return []

    def clear(self) -> None:
        pass

    async def wait_empty(self) -> None:
        return None


async def _gmqtt(
    port: int, count: int, window: int, payload: bytes, protocol: str, pace: _Pace
) -> dict[str, Any]:
    from gmqtt import Client
    from gmqtt.mqtt.constants import MQTTv50, MQTTv311

    acked = 0
    done = asyncio.Event()
    sem: asyncio.Semaphore | None = None

    def on_ack(mid: int) -> None:
        nonlocal acked
        acked += 1
        assert sem is not None
        sem.release()
        if acked >= count:
            done.set()

    client = Client("bench-gmqtt", clean_session=True, persistent_storage=_GmqttAcks(on_ack))
    await client.connect(LOOPBACK, port, keepalive=30, version=MQTTv50 if protocol == "5" else MQTTv311)
    # MQTT 5: gmqtt refuses packet ids beyond the broker's Receive Maximum
    window = min(window, int(client._connection._handler.id_generator._max) - 1)
    sem = asyncio.Semaphore(window)
    n = len(TOPICS)
    burst = pace.burst
    c0, t0 = time.process_time(), time.perf_counter()
    pace.t0 = t0
    for i in range(count):
        if i % burst == 0 and i and (wait := pace.delay(i)):
            await asyncio.sleep(wait)
        await sem.acquire()
        client.publish(TOPICS[i % n], payload, qos=1)
    async with asyncio.timeout(120):
        await done.wait()
    t1, c1 = time.perf_counter(), time.process_time()
    await client.disconnect()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "window": window}


def _paho(port: int, count: int, window: int, payload: bytes, protocol: str, pace: _Pace) -> dict[str, Any]:
    import paho.mqtt.client as paho

    acked = 0
    connected = threading.Event()

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        nonlocal acked
        acked += 1

    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id="bench-paho",
        protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.connect(LOOPBACK, port, keepalive=30)
    deadline = time.monotonic() + 10
    while not connected.is_set() and time.monotonic() < deadline:
        client.loop(0.1)
    n = len(TOPICS)
    c0, t0 = time.process_time(), time.perf_counter()
    pace.t0 = t0
    deadline = time.monotonic() + 120
    i = 0
    while acked < count and time.monotonic() < deadline:
        while i < count and i - acked < window:
            if pace.rate and i and i % pace.burst == 0 and pace.delay(i) > 0:
                break  # this burst is done: the next one is due later
            client.publish(TOPICS[i % n], payload, qos=1)
            i += 1
        client.loop(min(0.01, pace.delay(i)) if pace.rate and i < count else 0.01)
    t1, c1 = time.perf_counter(), time.process_time()
    if acked < count:
        raise SystemExit(f"paho: only {acked} of {count} acknowledged within 120 s")
    client.disconnect()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "window": window}


CLIENTS = {"ours": _ours, "ours-sink": _ours_sink, "gmqtt": _gmqtt, "paho": _paho}


def child(args: argparse.Namespace) -> None:
    run = CLIENTS[args.child]
    payload = _payload(args.payload)
    pace = _Pace(float(args.rate), args.burst)
    if asyncio.iscoroutinefunction(run):
        coro = run(args.port, args.count, args.window, payload, args.protocol, pace)
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
    else:
        result = run(args.port, args.count, args.window, payload, args.protocol, pace)
    result["cpu_us_per_msg"] = 1e6 * result["cpu_s"] / args.count
    result["msgs_per_s"] = args.count / result["seconds"]
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path, window: int) -> Any:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    lines = [
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        "persistence false",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        f"max_inflight_messages {window}",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mosquitto did not start; see {workdir / 'mosquitto.log'}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=60_000)
    ap.add_argument("--payload", type=int, default=60, help="payload bytes (default 60)")
    ap.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight, at most")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--rate",
        default="0,15000",
        help="comma-separated target rates in msg/s; 0 = as fast as possible (default: 0,15000)",
    )
    ap.add_argument("--burst", type=int, default=500, help="messages per burst when paced (default 500)")
    ap.add_argument("--protocol", default="3.1.1,5", help="comma-separated: 3.1.1, 5")
    ap.add_argument(
        "--clients", default="ours,ours-sink,gmqtt,paho", help=f"comma-separated: {', '.join(CLIENTS)}"
    )
    ap.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default=_default_loop(),
        help="event loop of the asyncio clients (default: uvloop when installed, as the agent runs)",
    )
    ap.add_argument("--child", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    for name in clients:
        if name not in CLIENTS:
            raise SystemExit(f"unknown client {name!r}; choose from {', '.join(CLIENTS)}")
    rates = [float(r) for r in args.rate.split(",") if r.strip()]
    print(
        f"{args.count} QoS 1 messages of {args.payload} bytes over {len(TOPICS)} topics, "
        f"window {args.window}; median of {args.repeat} runs, interleaved (best in brackets)\n"
        f"CPU = time.process_time() of the client's own process; asyncio clients on {args.loop}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="pg-bench-mqtt-") as tmp,
        mosquitto(Path(tmp), args.window) as port,
    ):
        for rate in rates:
            what = (
                "as fast as possible" if not rate else f"paced: {rate:,.0f} msg/s in bursts of {args.burst}"
            )
            print(f"\n{what}")
            print(f"{'client':<10} {'MQTT':<6} {'window':>6} {'µs CPU/msg':>18} {'msg/s (wall)':>22}")
            for protocol in protocols:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
                for _ in range(args.repeat):
                    for name in clients:
                        runs[name].append(_run_child(args, name, port, protocol, rate))
                for name in clients:
                    cpu = [r["cpu_us_per_msg"] for r in runs[name]]
                    wall = [r["msgs_per_s"] for r in runs[name]]
                    print(
                        f"{name:<10} {protocol:<6} {runs[name][0]['window']:>6} "
                        f"{statistics.median(cpu):>9.2f} [{min(cpu):>6.2f}] "
                        f"{statistics.median(wall):>12,.0f} [{max(wall):>8,.0f}]",
                        flush=True,
                    )


def _run_child(args: argparse.Namespace, name: str, port: int, protocol: str, rate: float) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--port", str(port)]
    argv += ["--protocol", protocol, "--count", str(args.count), "--payload", str(args.payload)]
    argv += [
        "--window",
        str(args.window),
        "--loop",
        args.loop,
        "--rate",
        str(rate),
        "--burst",
        str(args.burst),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=_die_with_parent)
    if out.returncode != 0:
        raise SystemExit(f"{name} (MQTT {protocol}) failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()

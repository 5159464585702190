"""EdgeX forwarding cost against the plain MQTT path, per reading.

    python bench/edgex.py [--devices 100] [--points 30] [--rounds 40]

One process runs the real pipeline (registry, report-by-exception filter, encoder, persistent
outbox with synchronous=normal) and one sink wrapper (RunningSink) per run; mosquitto and a
stand-in for core-data (answers 201, in its own process) run outside it.  Each round is one poll
of every device (every value changed); a run ends when the sink has confirmed every record.
Figures: readings per second, and CPU of the agent's process per reading (µs), the cost that
matters on a gateway.  Paths compared:

    mqtt device   one MQTT message per device and poll (publish: device)
    mqtt point    one MQTT message per reading (publish: point)
    edgex bus     one EdgeX event per device and poll on the message bus (batch: true), v3 base64
    edgex bus v4  the same with JSON-object payloads
    edgex bus 1   one EdgeX event per reading (batch: false)
    edgex rest    one POST to core-data per device and poll
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

import _bench as B
from picogate._clock import Clock
from picogate._model import PointInfo, PointType, Reading
from picogate._outbox import Outbox
from picogate._pipeline import Pipeline
from picogate._registry import PointRegistry
from picogate._router import CommandRouter
from picogate._sink import RunningSink
from picogate.edgex._commands import Commands, EdgexNames
from picogate.edgex._forward import EdgexBusSink, EdgexEncoder, EdgexRestSink
from picogate.mqtt._client import MqttClient
from picogate.mqtt._sink import MqttEncoder, MqttSink
from picogate.mqtt._topics import Topics

CORE_DATA_STUB = """
import sys
from aiohttp import web
async def ping(request):
    return web.json_response({"apiVersion": "v3"})
async def event(request):
    await request.read()
    return web.json_response({"apiVersion": "v3", "statusCode": 201, "id": "x"}, status=201)
app = web.Application()
app.router.add_get("/api/v3/ping", ping)
app.router.add_post("/api/v3/event/{a}/{b}/{c}/{d}", event)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

NAMES = EdgexNames("picogate", "picogate-", "Readings")


def registry(devices: int, points: int) -> PointRegistry:
    reg = PointRegistry()
    for d in range(devices):
        for p in range(points):
            reg.add(PointInfo(f"dev{d:03d}", f"p{p:02d}", PointType.FLOAT32, "°C", origin="modbus"))
    return reg


async def run_path(
    name: str,
    make: Callable[[PointRegistry, Pipeline], Any],
    *,
    devices: int,
    points: int,
    rounds: int,
    workdir: Path,
) -> dict[str, Any]:
    reg = registry(devices, points)
    outbox = Outbox(workdir / f"{name.replace(' ', '_')}.db", synchronous="normal")
    await outbox.open()
    clock = Clock(check_sync=False)
    pipeline = Pipeline(reg, outbox, clock)
    sink = make(reg, pipeline)
    running = RunningSink(sink, outbox, batch_size=500 if not isinstance(sink, EdgexRestSink) else 64)
    task = asyncio.create_task(running.run())
    await asyncio.sleep(0.5)  # connected
    dev_names = [f"dev{d:03d}" for d in range(devices)]
    pts = [f"p{p:02d}" for p in range(points)]
    total = devices * points * rounds
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(rounds):
        ts = time.time_ns()
        # every device's poll of this round, concurrently, as the Modbus lines do
        await asyncio.gather(
            *[
                pipeline.emit([Reading(d, p, 20.0 + i + j * 0.01, ts, unit="°C") for j, p in enumerate(pts)])
                for d in dev_names
            ]
        )
    if not await running.drained(300):
        raise RuntimeError(f"{name}: not drained")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await outbox.close()
    return {
        "path": name,
        "readings": total,
        "readings_per_s": round(total / wall),
        "cpu_us_per_reading": round(cpu / total * 1e6, 2),
        "messages": running.stats.delivered,
    }


async def main_async(
    args: argparse.Namespace, workdir: Path, port: int, stub_port: int
) -> list[dict[str, Any]]:
    def client(**kw: Any) -> MqttClient:
        return MqttClient(host="127.0.0.1", port=port, client_id=f"bench-{time.monotonic_ns()}", **kw)

    def mqtt(per_point: bool) -> Callable[[PointRegistry, Pipeline], Any]:
        def make(reg: PointRegistry, pl: Pipeline) -> Any:
            topics = Topics("bench", "gw1")
            pl.encoders.append(
                MqttEncoder(topics, per_point=per_point, per_device=not per_point, qos=1, retain=False)
            )
            return MqttSink(client_factory=client, topics=topics, status_payload=lambda s: b"{}")

        return make

    def bus(version: int, batch: bool) -> Callable[[PointRegistry, Pipeline], Any]:
        def make(reg: PointRegistry, pl: Pipeline) -> Any:
            pl.encoders.append(EdgexEncoder("edgex", reg, NAMES, batch=batch))
            cmds = Commands(reg, CommandRouter(reg), lambda d, p: None, NAMES)
            return EdgexBusSink(
                client_factory=client,
                base_topic="edgex",
                version=version,
                qos=1,
                names=NAMES,
                commands=cmds,
                known_device=lambda d: "",
            )

        return make

    def rest(reg: PointRegistry, pl: Pipeline) -> Any:
        pl.encoders.append(EdgexEncoder("edgex_rest", reg, NAMES, batch=True))
        return EdgexRestSink(core_data=f"http://127.0.0.1:{stub_port}", service="picogate", timeout=10)

    paths: list[tuple[str, Callable[[PointRegistry, Pipeline], Any]]] = [
        ("mqtt device", mqtt(False)),
        ("mqtt point", mqtt(True)),
        ("edgex bus", bus(3, True)),
        ("edgex bus v4", bus(4, True)),
        ("edgex bus 1", bus(3, False)),
        ("edgex rest", rest),
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in paths}
    for _ in range(args.repeat):  # interleaved, so that a busy moment of the machine hits every path
        for name, make in paths:
            runs[name].append(
                await run_path(
                    name, make, devices=args.devices, points=args.points, rounds=args.rounds, workdir=workdir
                )
            )
    results = []
    for name, rs in runs.items():
        r = sorted(rs, key=lambda x: x["cpu_us_per_reading"])[len(rs) // 2]  # the median run
        results.append(r)
        print(
            f"{name:14s} {r['readings_per_s']:>9,d} readings/s  {r['cpu_us_per_reading']:6.2f} µs CPU/reading"
            f"  ({r['messages']:,d} messages; median of {len(rs)})",
            flush=True,
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--points", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="runs per path (the median is shown)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="picogate-bench-edgex-"))
    broker, port = B.start_broker(workdir, None)
    stub_port = B.free_port()
    stub = subprocess.Popen([sys.executable, "-c", CORE_DATA_STUB, str(stub_port)])
    try:
        B.wait_until(lambda: B.port_accepts(stub_port), 15, "core-data stub")
        results = asyncio.run(main_async(args, workdir, port, stub_port))
    finally:
        stub.terminate()
        stub.wait(5)
        broker.stop()
    by = {r["path"]: r for r in results}
    for edgex, mqtt in (
        ("edgex bus", "mqtt device"),
        ("edgex bus v4", "mqtt device"),
        ("edgex rest", "mqtt device"),
        ("edgex bus 1", "mqtt point"),
    ):
        ratio = by[edgex]["cpu_us_per_reading"] / by[mqtt]["cpu_us_per_reading"]
        verdict = "ok" if ratio <= 1.5 else "over the 1.5x target"
        print(f"{edgex} / {mqtt}: {ratio:.2f}x CPU per reading ({verdict})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

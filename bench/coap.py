"""CoAP benchmark: readings per second the agent accepts over CoAP, beside the raw aiocoap ceiling.

    .venv/bin/python bench/coap.py [--duration 5] [--clients 16] [--batch 10] [--json]

Both servers run in their own process (pinned like bench/run.py pins the agent) and are loaded
the same way by this process: `--clients` concurrent aiocoap requesters, each sending its next
POST when the previous one is answered, for `--duration` seconds, CON and NON.

- raw: a bare aiocoap server whose POST resource answers 2.04 at once (no parsing, no outbox):
  the ceiling of aiocoap itself on this machine with this load generator.
- agent: `picogate run` with a `coap:` section and mosquitto; every POST carries one (or, for
  "SenML batch", `--batch`) changing readings, decoded, checked, committed to the outbox
  before the 2.04: with `synchronous: full` (the default: the commit is fsync'd, it survives a
  power cut) and `normal` (it survives a crash of the agent).

Figures: requests/s answered 2.04 and readings/s, and the agent's share of the raw ceiling; then
the latency a node sees (send → 2.04, after the commit) at a steady `--rate` of reports.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as B

NODES = 16
POINTS = 10


def serve_raw(port: int) -> None:
    """Child: the bare aiocoap server."""
    import aiocoap
    from aiocoap import resource

    class Sink(resource.Resource):
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def main() -> None:
        site = resource.Site()
        for n in range(NODES):
            site.add_resource(("r", f"n{n}"), Sink())
        await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["udp6"])
        await asyncio.Event().wait()

    asyncio.run(main())


async def _load(port: int, clients: int, duration: float, *, con: bool, batch: int) -> dict[str, Any]:
    import aiocoap
    import orjson

    # One client context (one UDP port) per client, as 16 nodes would be: aiocoap keeps one CON
    # exchange at a time per peer (NSTART = 1), so a shared context would serialise CON requests.
    contexts = [await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(clients)]
    tuning = aiocoap.Reliable if con else aiocoap.Unreliable
    ok = failed = 0
    reasons: collections.Counter[str] = collections.Counter()
    counter = 0
    deadline = time.monotonic() + duration

    async def one(i: int) -> None:
        nonlocal ok, failed, counter
        ctx = contexts[i]
        uri = f"coap://127.0.0.1:{port}/r/n{i % NODES}"
        while time.monotonic() < deadline:
            counter += 1
            if batch == 1:
                payload, cf = orjson.dumps({"p0": counter}), 50
            else:
                payload = orjson.dumps([{"n": f"p{k}", "v": counter + k} for k in range(batch)])
                cf = 110
            msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload, transport_tuning=tuning)
            msg.opt.content_format = cf
            try:
                async with asyncio.timeout(5):
                    r = await ctx.request(msg).response
                if r.code == aiocoap.CHANGED:
                    ok += 1
                else:
                    failed += 1
                    reasons[f"{r.code} {r.payload[:60]!r}"] += 1
            except Exception as exc:
                failed += 1
                reasons[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    for ctx in contexts:
        await ctx.shutdown()
    return {
        "requests_per_s": ok / elapsed,
        "readings_per_s": ok * batch / elapsed,
        "failed": failed,
        "why": reasons.most_common(1)[0][0] if reasons else "",
        "clients": clients,
        "batch": batch,
        "con": con,
    }


async def _paced(port: int, rate: float, duration: float, *, con: bool = True) -> dict[str, Any]:
    """Open loop: `rate` reports a second spread over the nodes (each node its own client), each
    timed from its send to its 2.04 (which comes after the commit): the latency a node sees at
    a steady, moderate load rather than at the ceiling."""
    import aiocoap
    import orjson

    contexts = [await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(NODES)]
    tuning = aiocoap.Reliable if con else aiocoap.Unreliable
    lat: list[float] = []
    failed = 0
    period = NODES / rate  # each node reports once per period

    async def node(i: int) -> None:
        nonlocal failed
        ctx = contexts[i]
        uri = f"coap://127.0.0.1:{port}/r/n{i}"
        await asyncio.sleep(period * i / NODES)  # phases spread like real nodes'
        nxt = time.monotonic()
        deadline = nxt + duration
        k = 0
        while nxt < deadline:
            k += 1
            msg = aiocoap.Message(
                code=aiocoap.POST, uri=uri, payload=orjson.dumps({"p0": k}), transport_tuning=tuning
            )
            msg.opt.content_format = 50
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(5):
                    r = await ctx.request(msg).response
                if r.code == aiocoap.CHANGED:
                    lat.append((time.perf_counter() - t0) * 1000)
                else:
                    failed += 1
            except Exception:
                failed += 1
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    await asyncio.gather(*(node(i) for i in range(NODES)))
    for ctx in contexts:
        await ctx.shutdown()
    lat.sort()
    n = len(lat)
    return {
        "rate": rate,
        "answered": n,
        "failed": failed,
        "p50_ms": round(lat[n // 2], 2) if n else None,
        "p95_ms": round(lat[int(0.95 * (n - 1))], 2) if n else None,
        "p99_ms": round(lat[int(0.99 * (n - 1))], 2) if n else None,
        "max_ms": round(lat[-1], 2) if n else None,
    }


def _wait_coap(port: int, timeout: float = 60.0) -> None:
    import aiocoap

    async def probe() -> bool:
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            async with asyncio.timeout(1):
                msg = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/.well-known/core")
                await ctx.request(msg).response
            return True
        except Exception:
            return False
        finally:
            await ctx.shutdown()

    deadline = time.monotonic() + timeout
    while not asyncio.run(probe()):
        if time.monotonic() > deadline:
            raise B.ChildError(f"no CoAP server on port {port} after {timeout:g} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    place = B.placement(not args.no_pin)
    if place.peers:  # the load generator (this process) stays off the server's CPU, like the peers
        os.sched_setaffinity(0, place.peers)
    workdir = Path(args.workdir or B.BENCH / "results" / "coap-work")
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}

    def cases(port: int, label: str, batches: list[int]) -> None:
        for con in (False, True):
            for clients in (1, args.clients):
                for batch in batches:
                    r = asyncio.run(_load(port, clients, args.duration, con=con, batch=batch))
                    key = f"{label}_{'con' if con else 'non'}_c{clients}_b{batch}"
                    out[key] = r
                    print(
                        f"  {label:<11} {'CON' if con else 'NON'} {clients:>2} clients, {batch:>2} reading(s)/POST: "
                        f"{r['requests_per_s']:7.0f} req/s  {r['readings_per_s']:8.0f} readings/s"
                        f"  (failed {r['failed']}{': ' + r['why'] if r['failed'] else ''})",
                        flush=True,
                    )

    raw_port = B.free_port()
    raw = B.Child(
        "coap-raw", [B.PY, __file__, "--serve-raw", str(raw_port)], workdir / "raw.log", cpus=place.agent
    )
    raw.start()
    try:
        _wait_coap(raw_port)
        print("== CoAP: raw aiocoap server (POST → 2.04, nothing else)", flush=True)
        cases(raw_port, "raw", [1])
    finally:
        raw.stop()

    for sync in args.synchronous:
        _agent(args, place, workdir, sync, out, cases)
    for mode in ("non", "con"):
        raw_r = out[f"raw_{mode}_c{args.clients}_b1"]["requests_per_s"]
        for sync in args.synchronous:
            agent_r = out[f"agent-{sync}_{mode}_c{args.clients}_b1"]["requests_per_s"]
            out[f"share_{mode}_{sync}"] = agent_r / raw_r if raw_r else None
            print(
                f"  agent (outbox synchronous {sync}) / raw, {args.clients} clients, {mode.upper()}: "
                f"{100 * agent_r / raw_r:.0f} %"
            )
    return out


def _agent(
    args: argparse.Namespace, place: Any, workdir: Path, sync: str, out: dict[str, Any], cases: Any
) -> None:
    broker, mqtt_port = B.start_broker(workdir, place.peers)
    coap_port = B.free_port()
    cfg = {
        "gateway": {"id": "bench", "data_dir": str(workdir / f"data-{sync}")},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "outbox": {
            "synchronous": sync,
            **({"commit_interval": args.commit_interval} if args.commit_interval else {}),
        },
        "metrics": {"enabled": False},
        "clock": {"check_sync": False},
        "coap": {
            "bind": "127.0.0.1",
            "port": coap_port,
            "nodes": [
                {"name": f"n{n}", "points": {f"p{k}": {"type": "float64"} for k in range(POINTS)}}
                for n in range(NODES)
            ],
        },
    }
    B.write_config(workdir / "gateway.yaml", cfg)
    agent = B.Child(
        "agent",
        [B.PY, "-m", "picogate", "run", "-c", str(workdir / "gateway.yaml")],
        workdir / "agent.log",
        cpus=place.agent,
    )
    agent.start()
    try:
        _wait_coap(coap_port)
        print(
            f"== CoAP: the agent, outbox synchronous {sync} (decode, check, commit, then 2.04)",
            flush=True,
        )
        cases(coap_port, f"agent-{sync}", [1, args.batch])
        r = asyncio.run(_paced(coap_port, args.rate, max(args.duration, 10.0)))
        out[f"agent-{sync}_latency"] = r
        print(
            f"  agent-{sync:<5} CON, {args.rate:g} reports/s from {NODES} nodes: 2.04 after the commit in"
            f" p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms"
            f" ({r['answered']} answered, {r['failed']} failed; target p50 ≤ 10 ms, p99 ≤ 30 ms)",
            flush=True,
        )
    finally:
        agent.stop()
        broker.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per case")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batch", type=int, default=10, help="readings per SenML POST in the batch case")
    p.add_argument(
        "--synchronous",
        nargs="+",
        default=["full", "normal"],
        choices=["full", "normal"],
        help="outbox.synchronous values to run the agent with: the 2.04 waits for the commit, whose "
        "fsync (full) is most of a report's wait",
    )
    p.add_argument("--commit-interval", default="", help="outbox.commit_interval (default: the agent's own)")
    p.add_argument(
        "--rate", type=float, default=200.0, help="reports per second in the latency case (default 200)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--workdir", default="")
    p.add_argument("--serve-raw", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_raw:
        serve_raw(args.serve_raw)
        return 0
    try:
        out = run(args)
    finally:
        B.stop_all()
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Picogate benchmarks: `make bench` (or `.venv/bin/python bench/run.py`) prints the figures.

Scenarios (docs/benchmarks.md says what each measures and how):

    a  500 devices × 30 points @ 1 s, one message per device and poll, QoS 1, outbox synchronous=full
    b  the same with one message per point (15,000 msg/s)
    c  ceiling: faster polls until the agent saturates its core or falls behind
    s  one device polled as fast as it answers (poll: 0) on one connection
    u  100 unit ids behind one Modbus TCP port (a TCP to RS-485 bridge) @ 1 s
    d  write round trip (MQTT set → Modbus write → MQTT result) under load a
    e  building blocks: gmqtt vs paho-mqtt, pymodbus client round trips, the simulator, orjson vs json
    f  flashing simulated boards: one from clean, unchanged re-flash, factory boards/minute (bench/flash.py)
    m  the firmware's Modbus RTU master on MicroPython over a pty (bench/fw_modbus.py)
    w  Modbus TCP client CPU per request: pymodbus against the agent's links (bench/modbus_wire.py)
    rtu  an RTU bus over a pty at 115200 and 9600 baud: utilisation of the wire (bench/modbus_wire.py)
    rp2  the firmware on the real rp2 build, emulated RP2040, in board time (bench/fw_rp2.py; needs ../shared/rp2)
    r  the rule engine alone (bench/rules.py): readings/s through 1,000 stateful rules
    x  EdgeX: CPU per reading on the message bus and over core-data REST vs plain MQTT (bench/edgex.py)
    reload  rules hot reload: 1,000 rules, reload time and longest event-loop pause (bench/rules_reload.py)
    console  scenario a's load without and with the operator console, one page open (only when asked:
             --scenario console; target: the agent's CPU rises by at most 3 points)

    bench/run.py                          a..e with short defaults (about 5 minutes)
    bench/run.py --scenario a,d --duration 60
    bench/run.py --full                   scenario a runs 10 minutes (RSS flatness)
    bench/run.py --quick                  shorter windows, for a smoke run
    bench/run.py --profile                py-spy profile of the agent under scenario b's load
    bench/run.py --scenario a --sparkplug scenario a as Sparkplug B DDATA (docs/sparkplug.md)

The agent runs as `picogate run -c <generated gateway.yaml>` in its own process; the simulator
(bench/sim.py), mosquitto and the consumer (bench/consumer.py) run in theirs.  With two or more
CPUs the agent is pinned to the first and everything else to the others, so that the peers cannot
starve it and its figures are its own (`--no-pin` to turn that off).  Results also go to
bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as B

RESULTS = B.BENCH / "results"

TARGETS = {
    "a_cpu_pct": 7.0,
    "a_rss_mb": 100.0,
    "a_lag_p50_ms": 12.0,
    "a_lag_p99_ms": 40.0,
    "b_msgs_per_s": 15_000.0,
    "b_cpu_pct": 20.0,
    "c_points_per_s": 100_000.0,
    "d_avg_ms": 20.0,
    "d_p95_ms": 40.0,
    "r_readings_per_s": 500_000.0,
    "reload_ms": 500.0,
    "reload_pause_ms": 50.0,
}


def say(text: str = "") -> None:
    print(text, flush=True)


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f} %"


def fmt_int(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt1(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:.1f}{unit}"


# --------------------------------------------------------------------------------------------------
# the environment of one load scenario: broker, consumer, simulator, agent, sampler
# --------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    args: argparse.Namespace
    place: B.Placement
    workroot: Path
    agent_src: Path | None = None  # --agent-rev: that revision's agent/ tree, extracted here


@dataclass
class Env:
    name: str
    gateway: str
    devices: int
    poll: float
    publish: str
    broker: B.Child
    broker_port: int
    consumer: B.Child
    sim: B.Child
    agent: B.Agent
    sampler: B.Sampler
    startup_s: float
    rss_ready_mb: float
    workdir: Path


@contextlib.contextmanager
def load_env(
    ctx: Ctx,
    name: str,
    *,
    devices: int,
    poll: float,
    publish: str,
    stop_timeout: float = 20.0,
    wrapper: list[str] | None = None,
    nodelay: bool = True,
    units: bool = False,
    extra: Callable[[Path], dict[str, Any]] | None = None,
) -> Iterator[Env]:
    workdir = ctx.workroot / name
    workdir.mkdir(parents=True, exist_ok=True)
    peers, agent_cpus = ctx.place.peers, ctx.place.agent
    gateway = "bench_" + name.replace("-", "_")
    started: list[B.Child] = []
    agent: B.Agent | None = None
    sampler: B.Sampler | None = None
    try:
        broker, port = B.start_broker(workdir, peers, inflight=ctx.args.broker_inflight, nodelay=nodelay)
        started.append(broker)
        spb = ctx.args.sparkplug and publish == "device"
        topic = f"spBv1.0/{B.SPARKPLUG_GROUP}/#" if spb else f"picogate/{gateway}/#"
        consumer = B.start_consumer(workdir, port, topic, peers, sparkplug=spb)
        started.append(consumer)
        sim, ports = B.start_sim(workdir, devices, peers, units=units)
        started.append(sim)
        cfg_path = workdir / "gateway.yaml"
        metrics_port = B.free_port()
        B.write_config(
            cfg_path,
            B.agent_config(
                gateway_id=gateway,
                data_dir=workdir / "data",
                mqtt_port=port,
                metrics_port=metrics_port,
                device_ports=ports,
                poll=poll,
                publish=publish,
                synchronous=ctx.args.synchronous,
                check_sync=ctx.args.check_sync,
                units=devices if units else 0,
                modbus_driver=ctx.args.modbus_driver,
                sparkplug=spb,
            )
            | (extra(workdir) if extra is not None else {}),
        )
        agent = B.Agent(
            workdir, cfg_path, metrics_port, agent_cpus, src=ctx.agent_src, wrapper=wrapper or ()
        ).start()
        startup = agent.wait_ready(devices)
        rss_ready = agent.child.rss_mb()
        sampler = B.Sampler(agent, {"sim": sim, "broker": broker, "consumer": consumer}).start()
        yield Env(
            name,
            gateway,
            devices,
            poll,
            publish,
            broker,
            port,
            consumer,
            sim,
            agent,
            sampler,
            startup,
            rss_ready,
            workdir,
        )
    except B.ChildError as exc:
        raise B.ChildError(f"scenario {name}: {exc}\n(logs in {workdir})") from None
    finally:
        if sampler is not None:
            sampler.stop()
        if agent is not None:
            agent.child.stop(timeout=stop_timeout)
        for child in reversed(started):
            child.stop(timeout=5)


def steady(env: Env, warmup: float, duration: float) -> dict[str, Any]:
    """Warm up, then measure a window: agent CPU and RSS, rates, outbox depth, lag, peers' CPU."""
    time.sleep(warmup)
    split0 = env.agent.child.rss_split_mb()
    acked0 = env.agent.metric("picogate_messages_delivered_total")
    env.consumer.ask("mark")
    sim0 = env.sim.ask("stats")
    a = env.sampler.snap()
    time.sleep(duration)
    b = env.sampler.snap()
    sim1 = env.sim.ask("stats")
    win = env.consumer.ask("window")
    split1 = env.agent.child.rss_split_mb()
    delivered_agent = env.agent.metric("picogate_messages_delivered_total")
    received_total = env.consumer.ask("stats")["all_msgs"]
    wall = b.t - a.t
    samples = [a, *env.sampler.between(a.t + 0.01, b.t - 0.01), b]
    per_sec = [v for x, y in itertools.pairwise(samples) if (v := B.cpu_pct(x, y, "agent")) is not None]
    rss = [s.rss_mb for s in samples]
    depths = [s.depth for s in samples if s.depth is not None]
    depth_t = [s.t - a.t for s in samples if s.depth is not None]
    offered = (
        env.devices * B.POINTS_PER_DEVICE / env.poll if env.poll else None
    )  # poll 0: as fast as it answers
    out: dict[str, Any] = {
        "warmup_s": warmup,
        "window_s": round(wall, 2),
        "agent_cpu_pct": B.cpu_pct(a, b, "agent"),
        "agent_cpu_pct_per_s": {
            "min": min(per_sec) if per_sec else None,
            "p50": B.percentile(per_sec, 0.5) if per_sec else None,
            "max": max(per_sec) if per_sec else None,
        },
        "rss_mb": {
            "ready": env.rss_ready_mb,
            "window_start": rss[0],
            "window_end": rss[-1],
            "max": max(s.rss_mb for s in [*env.sampler.samples, b]),
            "slope_mb_per_min": B.slope_per_min([s.t - a.t for s in samples], rss),
            "split_start": split0,
            "split_end": split1,
        },
        "offered_points_per_s": offered,
        "read_points_per_s": (sim1["regs"] - sim0["regs"]) / (sim1["t"] - sim0["t"]),
        "msgs_per_s": win["msgs"] / wall,
        "acked_msgs_per_s": None
        if acked0 is None or delivered_agent is None
        else (delivered_agent - acked0) / wall,
        "points_per_s": win["points"] / wall,
        "duplicates": win["dups"],
        "lag_ms": {k: win[f"lag_{k}_ms"] for k in ("avg", "p50", "p95", "p99", "max")},
        "per_s": win.get("per_s"),
        "outbox_depth": {
            "avg": sum(depths) / len(depths) if depths else None,
            "max": max(depths) if depths else None,
            "end": depths[-1] if depths else None,
            "slope_per_min": B.slope_per_min(depth_t, [float(d) for d in depths]),
        },
        "broker_backlog_msgs": None
        if delivered_agent is None
        else max(0, int(delivered_agent) - int(received_total)),
        "peers_cpu_pct": {who: B.cpu_pct(a, b, who) for who in ("sim", "broker", "consumer", "runner")},
        "other_processes_cpu_pct": B.foreign_pct(a, b),
        "agent_waiting_for_cpu_pct": B.cpu_pct(a, b, "agent_wait"),
    }
    return out


def account(env: Env, timeout: float = 30.0, max_wait: float = 180.0) -> dict[str, Any]:
    """Every point read is delivered: pause the simulator, let the agent drain, compare counts.

    Waits until the outbox is empty and the consumer's count stood still for a second; gives up
    after `timeout` without progress (or `max_wait` in all): what is still queued is then reported
    as not drained, not as lost."""
    final = env.sim.ask("pause")
    t0 = last_progress = time.monotonic()
    last_points, stable_since = -1, time.monotonic()
    depth: int | None = None
    drained = False
    while time.monotonic() - last_progress < timeout and time.monotonic() - t0 < max_wait:
        stats = env.consumer.ask("stats")
        depth = env.agent.depth()
        if stats["points"] != last_points:
            last_points, stable_since = stats["points"], time.monotonic()
            last_progress = stable_since
        elif depth == 0 and time.monotonic() - stable_since >= 1.0:
            drained = True
            break
        time.sleep(0.2)
    stats = env.consumer.ask("stats")
    expected = int(final["regs"])
    return {
        "polls_answered": int(final["reads"]),
        "points_expected": expected,
        "points_delivered": int(stats["points"]),
        "points_missing": expected - int(stats["points"]),
        "drained": drained,
        "outbox_depth_at_end": depth,
        "duplicate_msgs": int(stats["dups"]),
        "reordered_msgs": int(stats["reordered"]),
        "messages": int(stats["msgs"]),
        "drain_s": round(time.monotonic() - t0, 2),
    }


def print_load(title: str, r: dict[str, Any], acc: dict[str, Any] | None, env: Env) -> None:
    say(f"   start-up: {r['startup_s']:.1f} s until the broker and all {env.devices} devices were connected")
    say(f"   window: {r['window_s']:.0f} s after a {r['warmup_s']:.0f} s warm-up")
    pc = r["agent_cpu_pct_per_s"]
    say(
        f"   agent CPU: {fmt1(r['agent_cpu_pct'], ' %')} of one core"
        f" (per second: min {fmt1(pc['min'])}, median {fmt1(pc['p50'])}, max {fmt1(pc['max'])})"
    )
    m = r["rss_mb"]
    slope = m["slope_mb_per_min"]
    say(
        f"   agent RSS: {m['ready']:.1f} MB when ready, {m['window_start']:.1f} → {m['window_end']:.1f} MB over the window,"
        f" max {m['max']:.1f} MB, slope {'—' if slope is None else f'{slope:+.2f}'} MB/min"
        + "; anon/file/shmem "
        + " → ".join("/".join(f"{v:.0f}" for v in sp.values()) for sp in (m["split_start"], m["split_end"]))
        + " MB"
    )
    say(
        f"   delivered: {fmt_int(r['msgs_per_s'])} msg/s, {fmt_int(r['points_per_s'])} points/s to the consumer"
        f" (read from the devices: {fmt_int(r['read_points_per_s'])} points/s; nominal {fmt_int(r['offered_points_per_s'])});"
        f" acknowledged by the broker: {fmt_int(r['acked_msgs_per_s'])} msg/s (the agent's count)"
    )
    d = r["outbox_depth"]
    dslope = d["slope_per_min"]
    say(
        f"   outbox depth (records): avg {fmt_int(d['avg'])}, max {fmt_int(d['max'])}, at end {fmt_int(d['end'])},"
        f" trend {'—' if dslope is None else f'{dslope:+,.0f}'}/min"
    )
    lag = r["lag_ms"]
    say(
        f"   lag reading → consumer: avg {fmt1(lag['avg'])} ms, p50 {lag['p50']} ms, p95 {lag['p95']} ms,"
        f" p99 {lag['p99']} ms, max {fmt1(lag['max'])} ms; broker backlog at window end: {fmt_int(r['broker_backlog_msgs'])} msgs"
    )
    sp = r.get("per_s")
    if sp:
        say(
            f"   points delivered per second: min {fmt_int(sp['min'])}, p5 {fmt_int(sp['p5'])}, median {fmt_int(sp['p50'])},"
            f" p95 {fmt_int(sp['p95'])}, max {fmt_int(sp['max'])} (stdev {sp['stdev']:,.0f}; {sp['seconds']} whole seconds)"
        )
    p = r["peers_cpu_pct"]
    say(
        f"   peers' CPU (% of one core): simulator {fmt1(p['sim'])}, mosquitto {fmt1(p['broker'])}, consumer {fmt1(p['consumer'])},"
        f" runner {fmt1(p['runner'])}; other processes on the machine {fmt1(r['other_processes_cpu_pct'])};"
        f" agent runnable but waiting for its CPU {fmt1(r['agent_waiting_for_cpu_pct'], ' %')} of the time"
    )
    if acc is not None:
        if not acc["drained"]:
            say(
                f"   NOT DRAINED after {acc['drain_s']:.0f} s: {fmt_int(acc['outbox_depth_at_end'])} outbox records still queued;"
                " 'missing' below includes what was still on its way"
            )
        say(
            f"   every point: {fmt_int(acc['points_expected'])} read by the agent (simulator's count),"
            f" {fmt_int(acc['points_delivered'])} delivered, {fmt_int(acc['points_missing'])} missing,"
            f" {acc['duplicate_msgs']:,} duplicate messages, {acc['reordered_msgs']:,} out of order on their topic"
        )


# --------------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------------


def scenario_load(ctx: Ctx, key: str, publish: str) -> dict[str, Any]:
    args = ctx.args
    duration = args.full_duration if (args.full and key == "a") else args.duration
    how = (
        "Sparkplug B DDATA (QoS 0)"
        if args.sparkplug and publish == "device"
        else f"publish: {publish}, QoS 1"
    )
    title = f"{key}. {args.devices} devices × 30 points @ 1 s, {how}, outbox synchronous={args.synchronous}"
    say(f"\n== {title}")
    with load_env(ctx, key, devices=args.devices, poll=1.0, publish=publish) as env:
        r = steady(env, args.warmup, duration)
        r["startup_s"] = env.startup_s
        acc = account(env)
        r["accounting"] = acc
        print_load(title, r, acc, env)
    r |= {
        "devices": args.devices,
        "points_per_device": B.POINTS_PER_DEVICE,
        "poll_s": 1.0,
        "publish": publish,
    }
    if key == "a":
        ok_cpu = r["agent_cpu_pct"] is not None and r["agent_cpu_pct"] <= TARGETS["a_cpu_pct"]
        ok_rss = r["rss_mb"]["max"] <= TARGETS["a_rss_mb"]
        lag = r["lag_ms"]
        ok_lag = (lag["p50"] or 1e9) <= TARGETS["a_lag_p50_ms"] and (lag["p99"] or 1e9) <= TARGETS[
            "a_lag_p99_ms"
        ]
        say(
            f"   targets: CPU ≤ {TARGETS['a_cpu_pct']:.0f} % → {'met' if ok_cpu else 'NOT met'};"
            f" RSS ≤ {TARGETS['a_rss_mb']:.0f} MB and flat → {'met' if ok_rss else 'NOT met'};"
            f" lag p50 ≤ {TARGETS['a_lag_p50_ms']:.0f} ms and p99 ≤ {TARGETS['a_lag_p99_ms']:.0f} ms"
            f" → {'met' if ok_lag else 'NOT met'}"
        )
    else:
        # The agent's own rate (acknowledged by the broker); the consumer's shows the whole chain.
        want = TARGETS["b_msgs_per_s"] * args.devices / 500
        ok_rate = (r["acked_msgs_per_s"] or r["msgs_per_s"]) >= 0.98 * want
        ok_cpu = r["agent_cpu_pct"] is not None and r["agent_cpu_pct"] <= TARGETS["b_cpu_pct"]
        say(
            f"   targets: {fmt_int(want)} msg/s acknowledged → {'met' if ok_rate else 'NOT met'};"
            f" CPU ≤ {TARGETS['b_cpu_pct']:.0f} % → {'met' if ok_cpu else 'NOT met'}"
        )
    return r


def scenario_a(ctx: Ctx) -> dict[str, Any]:
    return scenario_load(ctx, "a", "device")


class ConsolePage(threading.Thread):
    """One open console page, as a browser keeps it: logged in, the plant page's live stream
    (the local API's /api/v1/events for the devices of its first 500 points), the alarms read
    every 5 s.  Loopback only; stops with `done`."""

    def __init__(self, port: int, user: str, password: str) -> None:
        super().__init__(name="console-page", daemon=True)
        self.port, self.user, self.password = port, user, password
        self.done = threading.Event()
        self.events = 0
        self.error = ""

    def _request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(
                method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
            )
            r = conn.getresponse()
            return r.status, r.getheader("Set-Cookie") or "", json.loads(r.read() or b"null")
        finally:
            conn.close()

    def run(self) -> None:
        import http.client
        import urllib.parse

        try:
            _, cookie, login = self._request(
                "POST", "/console/api/login", {"user": self.user, "password": self.password}
            )
            auth = {"Cookie": cookie.split(";", 1)[0], "X-CSRF-Token": login["csrf"]}
            _, _, snapshot = self._request("GET", "/api/v1/snapshot", headers=auth)
            devices, shown = [], 0
            for d in snapshot["devices"]:
                if shown >= 500:
                    break
                devices.append(d["name"])
                shown += len(d["points"])
            stream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            query = urllib.parse.quote(",".join(devices))
            stream.request("GET", f"/api/v1/events?devices={query}", headers=auth)
            live = stream.getresponse()
            next_poll = time.monotonic()
            while not self.done.is_set():
                line = live.readline()
                if not line:
                    break
                if line.startswith(b"event: "):
                    self.events += 1
                if time.monotonic() >= next_poll:
                    next_poll += 5
                    self._request("GET", "/console/api/alarms?history=1", headers=auth)
            stream.close()
        except Exception as exc:  # reported with the figures
            self.error = f"{type(exc).__name__}: {exc}"


def scenario_console(ctx: Ctx) -> dict[str, Any]:
    """Scenario a's load, then the same with the console on and one page open: the agent's CPU."""
    args = ctx.args
    title = f"console. scenario a ({args.devices} devices × 30 points @ 1 s), then with the console and one page open"
    say(f"\n== {title}")
    with load_env(ctx, "console-off", devices=args.devices, poll=1.0, publish="device") as env:
        off = steady(env, args.warmup, args.duration)
    password = "bench-console-password"

    def console_section(workdir: Path) -> dict[str, Any]:
        from picogate.console import Role, Users

        users = workdir / "users.json"
        if not users.exists():
            Users(users).add("bench", Role.ENGINEER, password)
        return {"console": {"users": str(users)}}

    with load_env(
        ctx, "console-on", devices=args.devices, poll=1.0, publish="device", extra=console_section
    ) as env:
        page = ConsolePage(env.agent.metrics_port, "bench", password)
        page.start()
        try:
            on = steady(env, args.warmup, args.duration)
        finally:
            page.done.set()
            page.join(timeout=35)
    cpu_off, cpu_on = off["agent_cpu_pct"], on["agent_cpu_pct"]
    rise = cpu_on - cpu_off if cpu_off is not None and cpu_on is not None else None
    say(
        f"   agent CPU: {fmt_pct(cpu_off)} without the console, {fmt_pct(cpu_on)} with one page open ({page.events} live events)"
    )
    if page.error:
        say(f"   the page failed: {page.error}")
    ok = rise is not None and rise <= 3.0 and not page.error
    say(
        f"   target: a rise of at most 3 points → {'met' if ok else 'NOT met'} ({rise if rise is None else round(rise, 2)})"
    )
    return {
        "off": off,
        "on": on,
        "cpu_rise_points": rise,
        "page_events": page.events,
        "page_error": page.error,
    }


def scenario_b(ctx: Ctx) -> dict[str, Any]:
    return scenario_load(ctx, "b", "point")


def scenario_s(ctx: Ctx) -> dict[str, Any]:
    """One device on one Modbus TCP connection, polled back to back (1 ms interval)."""
    args = ctx.args
    title = "s. one device × 30 points, poll: 0 (as fast as it answers), publish: device, QoS 1"
    say(f"\n== {title}")
    with load_env(ctx, "s", devices=1, poll=0.0, publish="device") as env:
        r = steady(env, args.warmup, args.duration)
        r["startup_s"] = env.startup_s
        acc = account(env)
        r["accounting"] = acc
        print_load(title, r, acc, env)
    polls = r["read_points_per_s"] / B.POINTS_PER_DEVICE
    r["polls_per_s"] = polls
    ok = polls >= 1000 and r["points_per_s"] >= 30_000 and acc["points_missing"] == 0
    say(
        f"   polls answered: {fmt_int(polls)}/s; target ≥ 1,000 polls/s and ≥ 30,000 points/s delivered,"
        f" none missing → {'met' if ok else 'NOT met'}"
    )
    return r


def scenario_u(ctx: Ctx) -> dict[str, Any]:
    """100 unit ids behind one Modbus TCP port (a TCP to RS-485 bridge), each polled every second."""
    args = ctx.args
    units = min(args.devices, 100)
    title = f"u. {units} unit ids behind one Modbus TCP port × 30 points @ 1 s, publish: device, QoS 1"
    say(f"\n== {title}")
    with load_env(ctx, "u", devices=units, poll=1.0, publish="device", units=True) as env:
        r = steady(env, args.warmup, args.duration)
        r["startup_s"] = env.startup_s
        acc = account(env)
        r["accounting"] = acc
        print_load(title, r, acc, env)
    share = r["points_per_s"] / r["offered_points_per_s"] * 100
    r["delivered_pct"] = share
    say(
        f"   delivered {share:.1f} % of the nominal rate; target 100 % → {'met' if share >= 99 else 'NOT met'}"
    )
    return r


def scenario_c(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    polls_ms = [int(x) for x in args.ladder.split(",")]
    say(
        f"\n== c. ceiling: {args.devices} devices × 30 points, publish: device, polls faster step by step"
        f" ({', '.join(f'{p} ms' for p in polls_ms)}) until the agent saturates its core or falls behind"
    )
    say(
        f"   each step: {args.step_warmup:.0f} s warm-up, {args.step_duration:.0f} s window; a fresh agent, broker and simulator;"
        " CPU wait: the agent runnable but waiting for its CPU (other processes)"
    )
    say(
        "   poll    nominal pts/s  read pts/s  delivered pts/s  msg/s   agent CPU  CPU wait  outbox end  lag p95   verdict"
    )
    steps = []
    for poll_ms in polls_ms:
        # stop_timeout: a saturated agent would spend up to 10 s draining its outbox, to no purpose here
        with load_env(
            ctx, f"c{poll_ms}", devices=args.devices, poll=poll_ms / 1000.0, publish="device", stop_timeout=2
        ) as env:
            r = steady(env, args.step_warmup, args.step_duration)
            r["startup_s"] = env.startup_s
        reasons = []
        cpu = r["agent_cpu_pct"] or 0.0
        if cpu >= 90.0:
            reasons.append("core saturated")
        if r["points_per_s"] < 0.95 * r["offered_points_per_s"]:
            reasons.append("behind the polls")
        depth = r["outbox_depth"]
        if (depth["end"] or 0) > 5_000 and (depth["slope_per_min"] or 0) > 0:
            reasons.append("outbox growing")
        if (r["lag_ms"]["p95"] or 0) > 2_000:
            reasons.append("lag > 2 s")
        r["poll_ms"] = poll_ms
        r["saturated"] = reasons
        steps.append(r)
        say(
            f"   {poll_ms:>4} ms {fmt_int(r['offered_points_per_s']):>14} {fmt_int(r['read_points_per_s']):>11}"
            f" {fmt_int(r['points_per_s']):>16} {fmt_int(r['msgs_per_s']):>7} {fmt1(cpu, ' %'):>10}"
            f" {fmt1(r['agent_waiting_for_cpu_pct'], ' %'):>9}"
            f" {fmt_int(depth['end']):>11} {str(r['lag_ms']['p95']) + ' ms':>9}   {', '.join(reasons) or 'keeps up'}"
        )
        if reasons:
            break
    best = max(steps, key=lambda s: s["points_per_s"])
    saturated = any(s["saturated"] for s in steps)
    ceiling = best["points_per_s"]
    say(
        f"   ceiling: {fmt_int(ceiling)} points/s delivered ({fmt_int(best['msgs_per_s'])} msg/s, poll {best['poll_ms']} ms,"
        f" agent CPU {fmt1(best['agent_cpu_pct'], ' %')})"
        + ("" if saturated else " — not saturated yet: extend --ladder for the true ceiling")
    )
    say(
        f"   target ≥ {fmt_int(TARGETS['c_points_per_s'])} points/s → {'met' if ceiling >= TARGETS['c_points_per_s'] else 'NOT met'}"
    )
    return {"steps": steps, "ceiling_points_per_s": ceiling, "saturated": saturated, "devices": args.devices}


def write_round_trips(env: Env, n: int, interval: float = 0.1) -> dict[str, Any]:
    """Send `n` set commands, one per `interval`, each to the next device; time each `…/result`."""
    import paho.mqtt.client as paho

    root = f"picogate/{env.gateway}"
    results: dict[str, float] = {}
    codes: Counter[str] = Counter()
    cond = threading.Condition()
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, m: paho.MQTTMessage) -> None:
        t = time.perf_counter()
        try:
            body = json.loads(m.payload)
        except ValueError:
            return
        with cond:
            rid = str(body.get("id", ""))
            if rid and rid not in results:
                results[rid] = t
                codes[str(body.get("code"))] += 1
                cond.notify_all()

    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"bench-writer-{env.name}", protocol=paho.MQTTv311
    )
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"{root}/cmd/+/+/result", qos=1)
    client.connect(B.LOOPBACK, env.broker_port, keepalive=30)
    client.loop_start()
    rtts: list[float] = []
    timeouts = 0
    try:
        if not subscribed.wait(10):
            raise B.ChildError("writer: subscription not acknowledged")
        sim0 = env.sim.ask("stats")
        cpu0 = env.sampler.snap()
        next_t = time.perf_counter()
        for i in range(n):
            dev = f"dev{(i * 37) % env.devices:04d}"
            rid = f"w{i}"
            sent = time.perf_counter()
            client.publish(
                f"{root}/cmd/{dev}/{B.WRITABLE_POINT}/set", json.dumps({"v": 1000 + i, "id": rid}), qos=1
            )
            with cond:
                cond.wait_for(lambda rid=rid: rid in results, timeout=5.0)
                got = results.get(rid)
            if got is None:
                timeouts += 1
            else:
                rtts.append((got - sent) * 1000.0)
            next_t += interval
            time.sleep(max(0.0, next_t - time.perf_counter()))
        cpu1 = env.sampler.snap()
        sim1 = env.sim.ask("stats")
    finally:
        client.disconnect()
        client.loop_stop()
    r: dict[str, Any] = {
        "samples": n,
        "answered": len(rtts),
        "timeouts": timeouts,
        "codes": dict(codes),
        "writes_at_devices": sim1["writes"] - sim0["writes"],
        "agent_cpu_pct": B.cpu_pct(cpu0, cpu1, "agent"),
    }
    if rtts:
        r |= {
            "avg_ms": sum(rtts) / len(rtts),
            "p50_ms": B.percentile(rtts, 0.5),
            "p95_ms": B.percentile(rtts, 0.95),
            "max_ms": max(rtts),
            "min_ms": min(rtts),
        }
    return r


def _say_rtt(r: dict[str, Any]) -> None:
    if "avg_ms" in r:
        say(
            f"   round trip: avg {r['avg_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms,"
            f" max {r['max_ms']:.1f} ms, min {r['min_ms']:.1f} ms"
        )
    say(
        f"   {r['answered']}/{r['samples']} answered ({', '.join(f'{k}: {v}' for k, v in sorted(r['codes'].items()))}),"
        f" {r['timeouts']} timed out; {r['writes_at_devices']} writes reached the devices;"
        f" agent CPU meanwhile {fmt1(r['agent_cpu_pct'], ' %')}"
    )


def scenario_d(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    n = args.samples
    say(
        f"\n== d. write round trip under load a: {n} set commands, one every 100 ms, MQTT set → Modbus FC 6 → MQTT result"
    )
    with load_env(ctx, "d", devices=args.devices, poll=1.0, publish="device") as env:
        time.sleep(min(args.warmup, 5.0))
        r = write_round_trips(env, n)
    _say_rtt(r)
    ok = (
        "avg_ms" in r
        and r["avg_ms"] < TARGETS["d_avg_ms"]
        and r["p95_ms"] < TARGETS["d_p95_ms"]
        and not r["timeouts"]
    )
    say(
        f"   target avg < {TARGETS['d_avg_ms']:.0f} ms and p95 < {TARGETS['d_p95_ms']:.0f} ms"
        f" → {'met' if ok else 'NOT met'}"
    )
    # The same with mosquitto's default set_tcp_nodelay false, on 5 idle devices (quick to start).
    m = max(10, n // 5)
    say(
        f"   for comparison, mosquitto's default (set_tcp_nodelay false, Nagle on), 5 idle devices, {m} commands:"
    )
    with load_env(ctx, "d_nagle", devices=5, poll=1.0, publish="device", nodelay=False) as env:
        time.sleep(1.0)
        r["broker_nagle"] = nagle = write_round_trips(env, m)
    _say_rtt(nagle)
    return r


def _micro(
    ctx: Ctx, argv: list[str], cpus: frozenset[int] | None, workdir: Path, timeout: float = 180.0
) -> dict[str, Any]:
    child = B.Child(
        f"micro-{argv[0]}",
        [B.PY, str(B.BENCH / "micro.py"), *argv],
        workdir / "micro.log",
        cpus=cpus,
        control=True,
    )
    child.start()
    try:
        return child.line(timeout)
    finally:
        child.stop(timeout=5)


def scenario_e(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    say(
        "\n== e. building blocks (each in its own process; the client on the agent's CPU, the server on the others)"
    )
    workdir = ctx.workroot / "e"
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    client_cpus, server_cpus = ctx.place.agent, ctx.place.peers

    # MQTT clients, QoS 1, every message acknowledged: bench/mqtt_clients.py's child mode, so that
    # scenario e and the stand-alone comparison measure the same code (ours, gmqtt, paho-mqtt).
    broker, port = B.start_broker(workdir, server_cpus, inflight=args.broker_inflight)
    mq: dict[str, dict[str, Any]] = {}
    try:
        for name in ("ours", "gmqtt", "paho"):
            child = B.Child(
                f"mqtt-{name}",
                [B.PY, str(B.BENCH / "mqtt_clients.py"), "--child", name, "--port", str(port),
                 "--protocol", "5", "--count", str(args.mqtt_count), "--window", "1000", "--rate", "0"],
                workdir / "mqtt_clients.log",
                cpus=client_cpus,
                control=True,
            )  # fmt: skip
            child.start()
            try:
                mq[name] = child.line(180.0)
            finally:
                child.stop(timeout=5)
    finally:
        broker.stop()
    out["mqtt"] = mq
    say(
        f"   MQTT QoS 1 publish, {args.mqtt_count:,} messages, MQTT 5, local mosquitto (bench/mqtt_clients.py):"
    )
    for name in ("ours", "gmqtt", "paho"):
        m = mq[name]
        say(
            f"     {name:<8} {m['msgs_per_s']:>8,.0f} msg/s  {m['cpu_us_per_msg']:6.1f} µs CPU/msg"
            f"  (window {m['window']} in flight)"
        )
    out["mqtt_cpu_per_msg_vs_ours"] = {
        name: mq[name]["cpu_us_per_msg"] / mq["ours"]["cpu_us_per_msg"] for name in ("gmqtt", "paho")
    }
    say(
        "     CPU per message against ours: "
        + ", ".join(f"{k} {v:.1f}×" for k, v in out["mqtt_cpu_per_msg_vs_ours"].items())
    )

    # pymodbus client round trips on one connection, against the bench simulator and against pymodbus's server.
    mb = {}
    for impl in ("bench", "pymodbus"):
        sim, ports = B.start_sim(workdir, 1, server_cpus, impl=impl)
        try:
            s0 = sim.ask("stats")
            r = _micro(
                ctx,
                ["modbus-client", "--port", str(ports[0]), "--seconds", str(args.modbus_seconds)],
                client_cpus,
                workdir,
            )
            s1 = sim.ask("stats")
        finally:
            sim.stop()
        # includes the client's 50 warm-up requests
        r["server_cpu_us_per_request"] = 1e6 * (s1["cpu_s"] - s0["cpu_s"]) / (r["requests"] + 50)
        mb[impl] = r
    out["modbus"] = mb
    say(
        f"   pymodbus {metadata.version('pymodbus')} client, read 30 holding registers, one connection, {args.modbus_seconds:g} s:"
    )
    for impl, label in (("bench", "bench/sim.py"), ("pymodbus", "pymodbus server")):
        r = mb[impl]
        say(
            f"     vs {label:<16} {r['round_trips_per_s']:>7,.0f} round trips/s  client {r['cpu_us_per_request']:5.0f} µs CPU/request"
            f"  server {r['server_cpu_us_per_request']:5.0f} µs CPU/request"
        )
    per = {impl: mb[impl]["server_cpu_us_per_request"] for impl in mb}
    say(
        f"     simulator cost for 500 devices @ 1 s (500 req/s): bench/sim.py {per['bench'] * 500 / 1e4:.1f} % of a core,"
        f" pymodbus {per['pymodbus'] * 500 / 1e4:.1f} %; @ 200 ms (2,500 req/s): {per['bench'] * 2500 / 1e4:.1f} % vs"
        f" {per['pymodbus'] * 2500 / 1e4:.1f} %"
    )

    js = _micro(ctx, ["json"], client_cpus, workdir)["json"]
    out["json"] = js
    say("   JSON (µs per call):")
    for c in js:
        say(
            f"     {c['case']:<34} orjson {c['orjson_us']:6.2f}   json {c['json_us']:6.2f}   {c['speedup']:4.1f}×"
        )
    return out


def scenario_p(ctx: Ctx) -> dict[str, Any]:
    """The Pico link: readings/s from the real firmware (unix port) to the agent (bench/pico_link.py)."""
    say("\n== p. Pico link: firmware (MicroPython unix port) → pty → the agent's Pico source")
    seconds = "3" if ctx.args.quick else "10"
    out = subprocess.run(
        [B.PY, str(B.BENCH / "pico_link.py"), "--seconds", seconds, "--json"],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    say(
        f"   {r['readings_per_s']:,} readings/s ({r['frames_per_s']} frames/s, {r['readings_per_frame']} per frame), "
        f"{r['points']} points every {r['every']}; agent CPU {r['agent_cpu_percent']}% "
        f"({r['agent_cpu_ms_per_1000']} ms per 1,000 readings); target ≥ 2,000/s"
    )
    return r


def scenario_reload(ctx: Ctx) -> dict[str, Any]:
    """Hot reload of 1,000 rules: bench/rules_reload.py in its own process, on the agent's CPU."""
    say(
        "\n== reload. rules hot reload: 1,000 rules in 10 files, one rule changed per reload (bench/rules_reload.py)"
    )
    workdir = ctx.workroot / "reload"
    workdir.mkdir(parents=True, exist_ok=True)
    child = B.Child(
        "rules-reload",
        [B.PY, str(B.BENCH / "rules_reload.py"), "--json", "--reloads", "3" if ctx.args.quick else "5"],
        workdir / "rules_reload.log",
        cpus=ctx.place.agent,
        control=True,
    )
    child.start()
    try:
        r = child.line(300.0)
    finally:
        child.stop(timeout=5)
    say(
        f"   save → live {r['save_to_live_ms_median']:.0f} ms median ({r['save_to_live_ms_max']:.0f} max): "
        f"compile {r['compile_ms_median']:.0f} ms in the compiler process, prepare {r['prepare_ms_median']:.0f} ms "
        f"in a thread, swap {r['swap_ms_median']:.1f} ms on the loop"
    )
    say(
        f"   longest event-loop pause during reloads {r['max_pause_ms']:.1f} ms "
        f"({r['max_own_pause_ms']:.1f} ms of it not waiting for a CPU; {r['baseline_max_pause_ms']:.1f} ms "
        "without a reload)"
    )
    return r


def scenario_f(ctx: Ctx) -> dict[str, Any]:
    """Flashing simulated boards (bench/flash.py)."""
    import flash

    say("\n== f. flashing simulated boards (picogate flash, boot window 2 s as on a Pico)")
    out = flash.run(ctx.workroot / "f")
    flash.report(out)
    return out


def scenario_m(ctx: Ctx) -> dict[str, Any]:
    """The firmware's Modbus master: transactions/s and its own µs per transaction (bench/fw_modbus.py)."""
    import fw_modbus

    say("\n== m. firmware Modbus RTU master (MicroPython unix port) over a socat pty")
    rows = fw_modbus.asyncio.run(fw_modbus.run_all(2.0 if ctx.args.quick else 5.0))
    cost = fw_modbus.own_cost()
    fw_modbus.report(rows, cost)
    return {"rows": rows, "own_cost": cost}


def scenario_rp2(ctx: Ctx) -> dict[str, Any]:
    """The firmware on the rp2 build (bench/fw_rp2.py): Modbus, link and boot figures in board time;
    the hour-long heap run only with `bench/fw_rp2.py --only heap`."""
    say("\n== rp2. the firmware on the rp2 build (emulated RP2040), board time")
    done = subprocess.run(
        [B.PY, str(B.BENCH / "fw_rp2.py"), "--only", "modbus,link,boot", "--json"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    *lines, last = done.stdout.strip().splitlines()
    for line in lines:
        say("   " + line)
    result: dict[str, Any] = json.loads(last)
    return result


def scenario_r(ctx: Ctx) -> dict[str, Any]:
    """The rule engine alone (bench/rules.py, one process on the agent's CPU): two mixes of rules."""
    say("\n== r. rule engine: ready-made readings through 1,000 stateful rules, 3 rules per reading")
    out: dict[str, Any] = {}
    for mix in ("standard", "heavy"):
        cmd = [B.PY, str(B.BENCH / "rules.py"), "--mix", mix]
        cmd += ["--readings", "100000" if ctx.args.quick else "300000"]
        if ctx.place.agent:
            cmd = ["taskset", "-c", ",".join(map(str, sorted(ctx.place.agent))), *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        r: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        out[mix] = r
        say(f"   {mix} ({' + '.join(r['kinds'])}): {r['readings_per_s']:,} readings/s through process(),")
        say(
            f"      {r['readings_per_s_with_timers']:,} with the timers; compile {r['compile_ms']} ms, load {r['load_ms']} ms,"
            f" one rule added: {r['one_rule_added_compile_and_reload_ms']} ms"
        )
    say("   by kind (3 rules of one kind per reading): " + ", ".join(
        f"{k} {v:,}" for k, v in out["standard"]["readings_per_s_by_kind"].items()
    ))  # fmt: skip
    return out


def scenario_x(ctx: Ctx) -> dict[str, Any]:
    """EdgeX forwarding against the plain MQTT path, CPU per reading (bench/edgex.py)."""
    say("\n== x. EdgeX: message bus and core-data REST against plain MQTT (bench/edgex.py)")
    out_file = ctx.workroot / "edgex.json"
    argv = [B.PY, str(B.BENCH / "edgex.py"), "--json", str(out_file)]
    if ctx.args.quick:
        argv += ["--rounds", "5", "--repeat", "1"]
    subprocess.run(argv, check=True)
    return {"paths": json.loads(out_file.read_text())}


def scenario_coap(ctx: Ctx) -> dict[str, Any]:
    """CoAP readings/s beside the raw aiocoap ceiling: bench/coap.py in its own process."""
    say("\n== coap. readings accepted over CoAP (bench/coap.py)")
    duration = "2" if ctx.args.quick else "5"
    proc = subprocess.run(
        [
            B.PY,
            str(B.BENCH / "coap.py"),
            "--json",
            "--duration",
            duration,
            "--workdir",
            str(ctx.workroot / "coap"),
        ]
        + (["--no-pin"] if not ctx.args.pin else []),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    *lines, last = proc.stdout.strip().splitlines()
    for line in lines:
        say(line)
    result: dict[str, Any] = json.loads(last)
    return result


def scenario_w(ctx: Ctx) -> dict[str, Any]:
    """The Modbus wire path: client CPU per request, pymodbus against ours (bench/modbus_wire.py cpu)."""
    import modbus_wire

    say(
        "\n== w. Modbus TCP client CPU per request: pymodbus against the agent's links (bench/modbus_wire.py)"
    )
    quick = ctx.args.quick
    result = modbus_wire.run_cpu(2.0, 1 if quick else 2, ctx.place)
    modbus_wire.report_cpu(result)
    return result


def scenario_rtu(ctx: Ctx) -> dict[str, Any]:
    """An RTU bus over a pty, slave answering after the real wire time (bench/modbus_wire.py rtu)."""
    import modbus_wire

    say("\n== rtu. Modbus RTU bus utilisation at 115200 and 9600 baud (bench/modbus_wire.py)")
    result = modbus_wire.run_rtu(3.0 if ctx.args.quick else 5.0, ctx.place)
    modbus_wire.report_rtu(result)
    return result


SCENARIOS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "a": scenario_a,
    "b": scenario_b,
    "c": scenario_c,
    "s": scenario_s,
    "u": scenario_u,
    "d": scenario_d,
    "e": scenario_e,
    "f": scenario_f,
    "m": scenario_m,
    "w": scenario_w,
    "rtu": scenario_rtu,
    "rp2": scenario_rp2,
    "r": scenario_r,
    "p": scenario_p,
    "x": scenario_x,
    "coap": scenario_coap,
    "reload": scenario_reload,
    "console": scenario_console,
}
ON_REQUEST = {"console"}
"""Scenarios run only when named in --scenario."""


# --------------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------------


def _frame_parts(frame: str) -> tuple[str, str, str]:
    """'func (path/file.py:123)' → ('func', 'path/file.py', '123')."""
    if frame.endswith(")") and " (" in frame:
        name, loc = frame[:-1].rsplit(" (", 1)
        path, _, line = loc.rpartition(":")
        return name, path, line
    return frame, "", ""


def _package(path: str) -> str:
    """py-spy prints paths relative to sys.path: 'picogate/_outbox.py', 'gmqtt/mqtt/protocol.py'."""
    p = path.replace("\\", "/")
    if p.startswith("<"):
        return "dataclass-generated code" if p == "<string>" else p
    if p.startswith("picogate/"):
        return "picogate." + p.removeprefix("picogate/").removesuffix(".py").replace("/", ".")
    head = p.split("/", 1)[0].removesuffix(".py")
    return head or "?"


# Leaf frames where a thread waits (py-spy's idle detection does not always see these as idle).
_IDLE_LEAVES = {
    ("_worker", "concurrent/futures/thread.py"),
    ("wait", "threading.py"),
    ("select", "selectors.py"),
}


def summarize_profile(raw: Path, top: int) -> dict[str, Any]:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text(errors="replace").splitlines():
        path, _, count = line.rpartition(" ")
        if not path:
            continue
        try:
            stacks.append((path.split(";"), int(count)))
        except ValueError:
            continue
    by_thread: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    idle = 0
    for frames, n in stacks:
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        thread = thread.split(": ", 1)[-1]
        py_frames = [f for f in frames if " (" in f and not f.startswith(("thread", "process"))]
        if not py_frames:
            continue
        name, path, lineno = _frame_parts(py_frames[-1])
        if (name, path) in _IDLE_LEAVES:
            idle += n
            continue
        by_thread[thread] += n
        self_fn[f"{name} ({_package(path)})"] += n
        self_line[f"{path}:{lineno} {name}"] += n
        self_pkg[_package(path)] += n
        seen = set()
        for f in py_frames:
            fname, fpath, _ = _frame_parts(f)
            key = f"{fname} ({_package(fpath)})"
            if key not in seen:
                seen.add(key)
                incl_fn[key] += n
    total = sum(by_thread.values())

    def pct(c: Counter[str], k: int = top) -> list[tuple[str, float]]:
        return [(key, 100.0 * v / total) for key, v in c.most_common(k)] if total else []

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "threads": pct(by_thread),
        "self_by_package": pct(self_pkg, 15),
        "self_by_function": pct(self_fn),
        "self_by_line": pct(self_line, 15),
        "inclusive_by_function": pct(incl_fn),
    }


def run_profile(ctx: Ctx) -> dict[str, Any]:
    if ctx.args.profile_tool != "py-spy":
        return run_inproc_profile(ctx)
    args = ctx.args
    pyspy = shutil.which("py-spy") or str(Path(B.PY).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        say("\n== profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped")
        return {"skipped": "py-spy not installed"}
    publish = args.profile_publish
    say(
        f"\n== profile: py-spy ({args.profile_seconds:g} s at 100 Hz) on the agent under {args.devices} devices × 30 points"
        f" @ 1 s, publish: {publish}"
    )
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{publish}.txt"
    with load_env(ctx, f"profile-{publish}", devices=args.devices, poll=1.0, publish=publish) as env:
        time.sleep(args.warmup)
        cpu0 = env.sampler.snap()
        argv = [
            pyspy,
            "record",
            "--pid",
            str(env.agent.child.pid),
            "--duration",
            str(int(args.profile_seconds)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--threads",
            "--output",
            str(raw),
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.profile_seconds + 60, check=False
        )
        cpu1 = env.sampler.snap()
        if proc.returncode != 0 or not raw.exists():
            say(f"   py-spy failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            return {"error": proc.stderr[-2000:]}
    s = summarize_profile(raw, args.profile_top)
    s["agent_cpu_pct_while_profiled"] = B.cpu_pct(cpu0, cpu1, "agent")
    s["raw"] = str(raw)
    cpu = s["agent_cpu_pct_while_profiled"] or 0.0
    say(
        f"   {s['samples']:,} busy samples ({s['idle_samples_dropped']:,} idle ones dropped); agent CPU while profiled"
        f" {fmt1(cpu, ' %')} of a core; raw stacks: {raw.relative_to(B.ROOT)}"
    )
    say("   percentages are of the agent's busy samples; ≈ % of a core = that × " + f"{cpu / 100:.2f}")
    say("   by thread: " + ", ".join(f"{k} {v:.1f} %" for k, v in s["threads"]))
    for title, key in (
        ("self time by package/module", "self_by_package"),
        ("self time by function", "self_by_function"),
        ("self time by line", "self_by_line"),
        ("inclusive time by function (anywhere on the stack)", "inclusive_by_function"),
    ):
        say(f"   {title}:")
        for k, v in s[key]:
            say(f"     {v:5.1f} %  {k}")
    return s


def run_inproc_profile(ctx: Ctx) -> dict[str, Any]:
    """cProfile or tracemalloc: the gateway runs in-process in bench/inproc.py, same config and load."""
    args = ctx.args
    tool, publish = args.profile_tool, args.profile_publish
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{tool}-{publish}.txt"
    out.unlink(missing_ok=True)
    say(
        f"\n== profile: {tool} ({args.profile_seconds:g} s window after {args.warmup:g} s) on the gateway in-process under"
        f" {args.devices} devices × 30 points @ 1 s, publish: {publish}"
    )
    wrapper = [
        "--tool",
        tool,
        "--warmup",
        str(args.warmup),
        "--seconds",
        str(args.profile_seconds),
        "--out",
        str(out),
    ]
    with load_env(
        ctx, f"{tool}-{publish}", devices=args.devices, poll=1.0, publish=publish, wrapper=wrapper
    ) as env:
        rss0 = env.agent.child.rss_mb()
        B.wait_until(
            lambda: out.exists() or not env.agent.child.running,
            args.warmup + args.profile_seconds + 600,
            f"the {tool} report",
        )
        rss1 = env.agent.child.rss_mb()
    if not out.exists():
        say("   no report was written (see the agent's log)")
        return {"error": "no report"}
    text = out.read_text()
    say(f"   RSS {rss0:.1f} → {rss1:.1f} MB; report: {out.relative_to(B.ROOT)} (first lines below)")
    for line in text.splitlines()[: args.profile_top + 5]:
        say("   " + line[:200])
    return {"tool": tool, "report": str(out), "rss_mb": [rss0, rss1]}


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_rev() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(B.ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(B.ROOT), "status", "--porcelain", "--untracked-files=no", "agent"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + (" (agent/ has uncommitted changes)" if dirty.stdout.strip() else "")
    return "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def extract_agent(rev: str, workroot: Path) -> Path:
    """`git archive <rev> agent` into the work folder (read-only for the repository)."""
    import tarfile

    dest = workroot / f"agent-{rev.replace('/', '_')}"
    proc = subprocess.run(
        ["git", "-C", str(B.ROOT), "archive", "--format=tar", rev, "agent"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"--agent-rev {rev}: {proc.stderr.decode(errors='replace').strip()}")
    import io

    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "agent"


def machine(ctx: Ctx) -> dict[str, Any]:
    mosq = "?"
    with contextlib.suppress(OSError, B.ChildError, subprocess.SubprocessError):
        p = subprocess.run([B.mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5)
        mosq = (p.stdout + p.stderr).splitlines()[0].replace("mosquitto version ", "")
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "placement": ctx.place.describe(),
        "versions": {
            "picogate": _version("picogate"),
            "pymodbus": _version("pymodbus"),
            "gmqtt": _version("gmqtt"),
            "paho-mqtt": _version("paho-mqtt"),
            "orjson": _version("orjson"),
            "uvloop": _version("uvloop"),
            "mosquitto": mosq,
        },
        "git": _git_rev(),
    }


def summary(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "NOT met")

    def row(figure: str, measured: str, target: str = "—", ok: bool | None = None) -> None:
        rows.append((figure, measured, target, verdict(ok)))

    for key in ("a", "b"):
        r = results.get(key)
        if not r:
            continue
        acc, n, cpu, m = r["accounting"], r["devices"], r["agent_cpu_pct"], r["rss_mb"]
        scale = n / 500
        mode = "one message per device" if key == "a" else "one message per point"
        slope = m["slope_mb_per_min"]
        cpu_target = TARGETS[f"{key}_cpu_pct"]
        row(
            f"{key}: agent CPU, {n} dev × 30 pts @ 1 s, {mode}",
            fmt1(cpu, " %"),
            f"≤ {cpu_target:.0f} %",
            cpu is not None and cpu <= cpu_target,
        )
        rss_ok = m["max"] <= TARGETS["a_rss_mb"] if key == "a" else None
        row(
            f"{key}: agent RSS max (trend over the window)",
            f"{m['max']:.1f} MB ({'—' if slope is None else f'{slope:+.1f}'} MB/min)",
            f"≤ {TARGETS['a_rss_mb']:.0f} MB, flat" if key == "a" else "—",
            rss_ok,
        )
        acked = r.get("acked_msgs_per_s")
        want = 500 * scale if key == "a" else 15000 * scale
        row(
            f"{key}: msg/s acked by the broker / received by the consumer",
            f"{fmt_int(acked)} / {r['msgs_per_s']:,.0f}",
            f"{want:,.0f}",
            (acked or r["msgs_per_s"]) >= 0.98 * want,
        )
        row(
            f"{key}: points read vs delivered (missing)",
            f"{acc['points_expected']:,} / {acc['points_delivered']:,} ({acc['points_missing']:,})",
            "all",
            acc["points_missing"] == 0,
        )
    c = results.get("c")
    if c:
        best = max(c["steps"], key=lambda s: s["points_per_s"])
        row(
            "c: ceiling, points/s delivered, per-device messages",
            f"{c['ceiling_points_per_s']:,.0f} @ {best['poll_ms']} ms, CPU {fmt1(best['agent_cpu_pct'], ' %')}",
            f"≥ {TARGETS['c_points_per_s']:,.0f}",
            c["ceiling_points_per_s"] >= TARGETS["c_points_per_s"],
        )
    d = results.get("d")
    if d and "avg_ms" in d:
        row(
            "d: write round trip avg / p95 / max",
            f"{d['avg_ms']:.1f} / {d['p95_ms']:.1f} / {d['max_ms']:.1f} ms",
            "avg < 20 ms",
            d["avg_ms"] < TARGETS["d_avg_ms"] and not d["timeouts"],
        )
        nagle = d.get("broker_nagle", {})
        if "avg_ms" in nagle:
            row("d: same, mosquitto default (Nagle), idle", f"{nagle['avg_ms']:.1f} ms avg")
    rl = results.get("reload")
    if rl:
        row(
            "reload: 1,000 rules, save → live (median)",
            f"{rl['save_to_live_ms_median']:.0f} ms",
            f"< {TARGETS['reload_ms']:.0f} ms",
            rl["save_to_live_ms_median"] < TARGETS["reload_ms"],
        )
        row(
            "reload: longest event-loop pause",
            f"{rl['max_pause_ms']:.1f} ms",
            f"≤ {TARGETS['reload_pause_ms']:.0f} ms",
            rl["max_pause_ms"] <= TARGETS["reload_pause_ms"],
        )
    e = results.get("e")
    if e:
        mq, mb = e["mqtt"], e["modbus"]
        row(
            "e: QoS 1 µs CPU/msg, ours / gmqtt / paho",
            " / ".join(f"{mq[k]['cpu_us_per_msg']:.1f}" for k in ("ours", "gmqtt", "paho")),
        )
        row("e: pymodbus client round trips/s, one conn.", f"{mb['bench']['round_trips_per_s']:,.0f}")
        row(
            "e: simulator CPU/request, bench vs pymodbus",
            f"{mb['bench']['server_cpu_us_per_request']:.0f} vs {mb['pymodbus']['server_cpu_us_per_request']:.0f} µs",
        )
    w = results.get("w")
    if w:
        med = {
            (x["impl"], x["registers"]): x["cpu_us_median"]
            for x in w["summary"]
            if x["server"] == "pymodbus" and x["loop"] == "uvloop"
        }
        for regs in (10, 30):
            row(
                f"w: Modbus TCP µs CPU/request, {regs} regs, pymodbus / ours (uvloop)",
                f"{med[('pymodbus', regs)]:.0f} / {med[('link-builtin', regs)]:.0f}",
            )
    rtu = results.get("rtu")
    if rtu:
        for x in rtu["rows"]:
            if x["master"] in ("link-builtin", "line-builtin"):
                row(
                    f"rtu: bus utilisation {x['baud']} baud, {x['master']}",
                    f"{x['utilisation_pct']:.0f} %",
                    "≥ 90 %",
                    x["utilisation_pct"] >= 90,
                )
    rr = results.get("r")
    if rr:
        std, heavy = rr["standard"], rr["heavy"]
        row(
            "r: rule engine readings/s, 1,000 rules (FOR, CLEAR, avg), 1 core",
            f"{std['readings_per_s']:,}",
            f"≥ {TARGETS['r_readings_per_s']:,.0f}",
            std["readings_per_s"] >= TARGETS["r_readings_per_s"],
        )
        row("r: same, heavy mix (FOR+CLEAR, avg, min/max: 2 windows)", f"{heavy['readings_per_s']:,}")
    return rows


def print_summary(results: dict[str, Any]) -> None:
    rows = summary(results)
    if not rows:
        return
    w = [max(len(r[i]) for r in [*rows, ("figure", "measured", "target", "verdict")]) for i in range(4)]
    say("\n== summary")
    head = ("figure", "measured", "target", "verdict")
    say("   " + "  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    say("   " + "  ".join("-" * w[i] for i in range(4)))
    for r in rows:
        say("   " + "  ".join(r[i].ljust(w[i]) for i in range(4)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Picogate benchmarks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--scenario",
        default=",".join(k for k in SCENARIOS if k not in ON_REQUEST),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but {', '.join(sorted(ON_REQUEST))})",
    )
    p.add_argument(
        "--duration", type=float, default=30.0, help="measurement window of a and b, seconds (default 30)"
    )
    p.add_argument(
        "--sparkplug",
        action="store_true",
        help="the load scenarios that publish per device (a, s, u, c) go out as Sparkplug B DDATA "
        "(sparkplug: instead of mqtt:); the consumer decodes them",
    )
    p.add_argument("--warmup", type=float, default=10.0, help="warm-up before a window, seconds (default 10)")
    p.add_argument("--devices", type=int, default=500, help="simulated devices (default 500)")
    p.add_argument(
        "--full", action="store_true", help="scenario a runs --full-duration (10 minutes): RSS flatness"
    )
    p.add_argument("--full-duration", type=float, default=600.0, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="short windows: a smoke run of every scenario")
    p.add_argument("--ladder", default="200,150,100,75,50", help="c: poll intervals in ms, slowest first")
    p.add_argument(
        "--step-duration", type=float, default=10.0, help="c: window per step, seconds (default 10)"
    )
    p.add_argument("--step-warmup", type=float, default=5.0, help="c: warm-up per step, seconds (default 5)")
    p.add_argument("--samples", type=int, default=100, help="d: write commands (default 100, one per 100 ms)")
    p.add_argument("--mqtt-count", type=int, default=30_000, help="e: messages per MQTT client")
    p.add_argument(
        "--modbus-seconds", type=float, default=5.0, help="e: seconds of Modbus round trips per server"
    )
    p.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="outbox.synchronous (default full)"
    )
    p.add_argument(
        "--broker-inflight",
        type=int,
        default=1000,
        help="mosquitto max_inflight_messages, also its MQTT 5 Receive Maximum (default 1000; mosquitto's own is 20)",
    )
    p.add_argument(
        "--modbus-driver",
        choices=["builtin", "pymodbus"],
        default="builtin",
        help="a..d: the devices' Modbus driver (default builtin; pymodbus to compare on the same bench)",
    )
    p.add_argument(
        "--check-sync",
        action="store_true",
        help="clock.check_sync on (off by default: an unsynchronised bench clock would flag every reading)",
    )
    p.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin the agent and the peers to CPUs"
    )
    p.add_argument(
        "--profile", action="store_true", help="profile the agent (after the scenarios; py-spy by default)"
    )
    p.add_argument(
        "--profile-tool",
        choices=["py-spy", "cprofile", "tracemalloc"],
        default="py-spy",
        help="py-spy: sampling, attached to `picogate run`; cprofile/tracemalloc: the gateway in-process (bench/inproc.py)",
    )
    p.add_argument(
        "--profile-publish",
        choices=["point", "device"],
        default="point",
        help="load while profiling (default: point, scenario b)",
    )
    p.add_argument("--profile-seconds", type=float, default=20.0)
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the run's files (configs, logs, outboxes) here"
    )
    p.add_argument(
        "--agent-rev",
        default=None,
        help="run the agent of this git revision (e.g. HEAD, a commit) instead of the work tree",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.step_duration, args.step_warmup = 10.0, 5.0, 5.0, 3.0
        args.samples, args.mqtt_count, args.modbus_seconds = 30, 10_000, 2.0
        args.full_duration = 600.0
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()] if args.scenario else []
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    place = B.placement(args.pin)
    if place.peers:
        os.sched_setaffinity(0, place.peers)  # the runner (sampler, write client) stays off the agent's CPU
    workroot = args.workdir or Path(tempfile.mkdtemp(prefix="picogate-bench-"))
    workroot.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args, place, workroot)
    info = machine(ctx)
    say("Picogate benchmarks")
    say(f"cores: {info['cores']}")
    say(f"python: {info['implementation']} {info['python']} ({sys.executable})")
    say(f"cpu: {info['cpu_model']}; {info['platform']}")
    say(f"placement: {info['placement']}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f"; git {info['git']}")
    bi = args.broker_inflight
    say(
        f"broker: mosquitto on 127.0.0.1, persistence false, max_queued_messages 0, set_tcp_nodelay true,"
        f" max_inflight_messages {bi if bi is not None else '20 (default)'}"
    )
    if args.agent_rev:
        ctx.agent_src = extract_agent(args.agent_rev, workroot)
        info["agent_rev"] = args.agent_rev
        say(f"agent: revision {args.agent_rev} (agent/ extracted with git archive to {ctx.agent_src})")
    load = os.getloadavg()
    say(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    info["loadavg_before"] = load
    say(f"scenarios: {','.join(args.scenarios)}; work files in {workroot}")
    results: dict[str, Any] = {
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    results["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    rc = 0
    try:
        for key in args.scenarios:
            try:
                results[key] = SCENARIOS[key](ctx)
            except B.ChildError as exc:
                rc = 1
                say(f"   scenario {key} FAILED: {exc}")
                results[key] = {"error": str(exc)}
        if args.profile:
            try:
                results["profile"] = run_profile(ctx)
            except B.ChildError as exc:
                rc = 1
                say(f"   profile FAILED: {exc}")
                results["profile"] = {"error": str(exc)}
    except KeyboardInterrupt:
        rc = 130
        say("\ninterrupted: stopping every child process")
    finally:
        B.stop_all()
        results["elapsed_s"] = round(time.monotonic() - t0, 1)
        RESULTS.mkdir(exist_ok=True)
        gitignore = RESULTS / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n!.gitignore\n")
        (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.workdir is None and rc == 0:
            shutil.rmtree(workroot, ignore_errors=True)
    print_summary({k: v for k, v in results.items() if isinstance(v, dict) and "error" not in v})
    say(f"\nelapsed: {results['elapsed_s']:.0f} s; results: {(RESULTS / 'latest.json').relative_to(B.ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

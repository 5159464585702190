"""Plumbing for the benchmarks: child processes, CPU pinning, the broker, the agent's config, sampling.

Every child is started with PR_SET_PDEATHSIG (it gets SIGTERM if the runner dies, even by SIGKILL)
and recorded in `CHILDREN`; `stop_all()` ends them (SIGTERM, then SIGKILL) and the runner calls
it in a `finally`, on Ctrl-C and on SIGTERM.  Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOOPBACK = "127.0.0.1"
PY = sys.executable

# --------------------------------------------------------------------------------------------------
# CPU placement
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which CPUs the agent gets and which the peers (simulator, broker, consumer, runner) share."""

    agent: frozenset[int] | None
    peers: frozenset[int] | None

    @property
    def pinned(self) -> bool:
        return self.agent is not None

    def describe(self) -> str:
        if self.agent is None or self.peers is None:
            return "not pinned: agent and peers share every CPU"
        return f"agent pinned to CPU {_cpus(self.agent)}; simulator, broker, consumer and runner on CPU {_cpus(self.peers)}"


def _cpus(s: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(s))


def placement(pin: bool) -> Placement:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return Placement(None, None)
    if not pin or len(cpus) < 2:
        return Placement(None, None)
    return Placement(frozenset(cpus[:1]), frozenset(cpus[1:]))


# --------------------------------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------------------------------

_libc_name = ctypes.util.find_library("c")
_PRCTL = ctypes.CDLL(_libc_name, use_errno=True).prctl if _libc_name else None
_PR_SET_PDEATHSIG = 1

CHILDREN: list[Child] = []


def _preexec(cpus: frozenset[int] | None) -> Callable[[], None]:
    def run() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpus:
            os.sched_setaffinity(0, cpus)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return run


class ChildError(RuntimeError):
    pass


class Child:
    """A child process; with `control=True` it speaks one JSON line per stdin command."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cpus: frozenset[int] | None = None,
        control: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cpus = cpus
        self.control = control
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ps: psutil.Process | None = None

    def start(self) -> Child:
        self._log = self.log_path.open("a")
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if self.control else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.control else self._log,
            stderr=self._log,
            text=True,
            bufsize=1,
            preexec_fn=_preexec(self.cpus),
            env=self.env,
            cwd=ROOT,
        )
        CHILDREN.append(self)
        self._ps = psutil.Process(self.proc.pid)
        if self.control:
            threading.Thread(target=self._read, name=f"{self.name}-stdout", daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child printed (bounded wait)."""
        try:
            raw = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ChildError(f"{self.name}: no answer within {timeout:g} s\n{self.tail()}") from None
        if raw is None:
            raise ChildError(f"{self.name} exited (code {self.proc and self.proc.poll()})\n{self.tail()}")
        try:
            return dict(json.loads(raw))
        except json.JSONDecodeError:
            raise ChildError(f"{self.name}: unexpected output {raw!r}") from None

    def ask(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.name}: cannot send {command!r}: {exc}\n{self.tail()}") from None
        return self.line(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads), from /proc."""
        assert self._ps is not None
        t = self._ps.cpu_times()
        return float(t.user + t.system)

    def sched_wait_seconds(self) -> float:
        """Time the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
        total = 0
        for stat in Path(f"/proc/{self.pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[1])
        return total / 1e9

    def rss_split_mb(self) -> dict[str, float]:
        """RssAnon / RssFile / RssShmem from /proc/<pid>/status: heap or mapped files?"""
        out: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    out[key.removeprefix("Rss").lower()] = int(value.split()[0]) / 1024
        return out

    def rss_mb(self) -> float:
        assert self._ps is not None
        return float(self._ps.memory_info().rss) / 2**20

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(ValueError):
            CHILDREN.remove(self)
        return proc.returncode


def stop_all() -> None:
    """End every child still running, most recently started first."""
    for child in reversed(list(CHILDREN)):
        with contextlib.suppress(Exception):
            child.stop(timeout=3.0)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, *, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise ChildError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(found, os.X_OK):
        raise ChildError("mosquitto is not installed (make bootstrap installs it)")
    return found


def start_broker(
    workdir: Path, cpus: frozenset[int] | None, *, inflight: int | None = None, nodelay: bool = True
) -> tuple[Child, int]:
    port = free_port()
    conf = workdir / ("mosquitto.conf" if nodelay else "mosquitto-nagle.conf")
    lines = [
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        "persistence false",
        # QoS 1 messages queued for a subscriber are never dropped (the default of 1000 would drop
        # the consumer's backlog under load and hide whether the gateway delivered everything).
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if nodelay:
        # Without it (mosquitto's default) Nagle's algorithm on the broker's sockets meets the
        # peer's delayed ACK: a lone command or its result waits ~40 ms (see scenario d).
        lines.append("set_tcp_nodelay true")
    if inflight is not None:
        # QoS 1 messages in flight per client (default 20).  mosquitto also announces it to MQTT 5
        # clients as its Receive Maximum, so it bounds the agent's window as well as the consumer's.
        lines.append(f"max_inflight_messages {inflight}")
    if os.geteuid() == 0:
        lines.append("user root")  # keep root: dropping to "mosquitto" clears PR_SET_PDEATHSIG
    conf.write_text("\n".join(lines) + "\n")
    child = Child(
        "mosquitto", [mosquitto_binary(), "-c", str(conf)], workdir / f"{conf.stem}.log", cpus=cpus
    ).start()
    wait_until(lambda: port_accepts(port) or not child.running, 10, "mosquitto to listen")
    if not child.running:
        raise ChildError(f"mosquitto did not start:\n{child.tail()}")
    return child, port


def start_sim(
    workdir: Path, devices: int, cpus: frozenset[int] | None, *, impl: str = "bench", units: bool = False
) -> tuple[Child, list[int]]:
    if impl == "bench":
        argv = [PY, str(BENCH / "sim.py"), "--devices", str(devices), *(["--units"] if units else [])]
    else:
        argv = [PY, str(BENCH / "micro.py"), "pymodbus-server", "--devices", str(devices)]
    child = Child(f"sim-{impl}", argv, workdir / f"sim-{impl}.log", cpus=cpus, control=True).start()
    ready = child.line(timeout=60)
    if not ready.get("ready"):
        raise ChildError(f"simulator: {ready}")
    return child, [int(p) for p in ready["ports"]]


def start_consumer(
    workdir: Path, port: int, topic: str, cpus: frozenset[int] | None, *, sparkplug: bool = False
) -> Child:
    argv = [PY, str(BENCH / "consumer.py"), "--port", str(port), "--topic", topic]
    if sparkplug:
        argv.append("--sparkplug")
    child = Child("consumer", argv, workdir / "consumer.log", cpus=cpus, control=True).start()
    ready = child.line(timeout=15)
    if not ready.get("ready"):
        raise ChildError(f"consumer: {ready}")
    return child


# --------------------------------------------------------------------------------------------------
# the agent
# --------------------------------------------------------------------------------------------------

POINTS_PER_DEVICE = 30
WRITABLE_POINT = "r29"


def agent_config(
    *,
    gateway_id: str,
    data_dir: Path,
    mqtt_port: int,
    metrics_port: int,
    device_ports: Sequence[int],
    poll: float,
    publish: str,
    synchronous: str = "full",
    check_sync: bool = False,
    units: int = 0,
    modbus_driver: str = "builtin",
    sparkplug: bool = False,
) -> dict[str, Any]:
    """500 devices × 30 uint16 holding registers (addresses 0..29, one merged read per poll).

    `units` > 0: that many devices behind the one port of `device_ports` (unit ids 1..N), one
    Modbus line for all of them (a TCP to RS-485 bridge). `modbus_driver` other than the default
    is written as each device's `driver`."""
    points = [
        {"name": f"r{i:02d}", "table": "holding", "address": i, "type": "uint16"}
        | ({"writable": True} if f"r{i:02d}" == WRITABLE_POINT else {})
        for i in range(POINTS_PER_DEVICE)
    ]
    targets = (
        [(port, 1) for port in device_ports]
        if not units
        else [(device_ports[0], u) for u in range(1, units + 1)]
    )
    devices = [
        {
            "name": f"dev{i:04d}",
            "type": "modbus_tcp",
            "host": LOOPBACK,
            "port": port,
            "unit_id": unit,
            "poll": f"{poll * 1000:g}ms",
            **({"driver": modbus_driver} if modbus_driver != "builtin" else {}),
            "points": points,  # the same list object: YAML writes it once, as an anchor
        }
        for i, (port, unit) in enumerate(targets)
    ]
    cfg: dict[str, Any] = {
        "gateway": {"id": gateway_id, "data_dir": str(data_dir)},
        "mqtt": {"host": LOOPBACK, "port": mqtt_port, "qos": 1, "publish": publish},
        "outbox": {"synchronous": synchronous},
        "metrics": {"enabled": True, "host": LOOPBACK, "port": metrics_port},
        # Off by default: a bench machine whose clock is not NTP-synchronised would otherwise have
        # every reading re-made as `uncertain`, a path a synchronised gateway never takes.
        "clock": {"check_sync": check_sync},
        "devices": devices,
    }
    if sparkplug:  # Sparkplug only: DDATA per device and poll, QoS 0 with a PINGREQ barrier
        cfg["mqtt"] = {"enabled": False}
        cfg["sparkplug"] = {
            "group_id": SPARKPLUG_GROUP,
            "servers": [{"host": LOOPBACK, "port": mqtt_port}],
        }
    return cfg


SPARKPLUG_GROUP = "bench"


def write_config(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


class Agent:
    """`picogate run -c <config>` as a child process, with its /healthz."""

    def __init__(
        self,
        workdir: Path,
        config: Path,
        metrics_port: int,
        cpus: frozenset[int] | None,
        *,
        src: Path | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        if wrapper:  # the gateway in-process under a profiler (bench/inproc.py)
            argv = [PY, str(BENCH / "inproc.py"), *wrapper, "-c", str(config)]
        else:
            argv = [PY, "-m", "picogate", "--log-level", "info", "run", "-c", str(config)]
        env = None
        if src is not None:  # run another revision's agent (bench/run.py --agent-rev)
            env = dict(os.environ, PYTHONPATH=str(src))
        self.child = Child("agent", argv, workdir / "agent.log", cpus=cpus, env=env)
        self.metrics_port = metrics_port

    def start(self) -> Agent:
        self.child.start()
        return self

    def http(self, path: str, timeout: float = 2.0) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}{path}", timeout=timeout) as r:
                return bytes(r.read())
        except (OSError, ValueError):
            return None

    def health(self) -> dict[str, Any] | None:
        body = self.http("/healthz")
        if body is None:
            return None
        try:
            return dict(json.loads(body))
        except json.JSONDecodeError:
            return None

    def wait_ready(self, devices: int, timeout: float = 90.0) -> float:
        """Wait until the sink is connected and every device answered; return the seconds it took."""
        t0 = time.monotonic()

        def ready() -> bool:
            if not self.child.running:
                raise ChildError(
                    f"the agent exited (code {self.child.proc and self.child.proc.poll()}):\n{self.child.tail()}"
                )
            h = self.health()
            if not h or h.get("status") != "ok":
                return False
            states = h.get("devices", {})
            return len(states) == devices and all(s == "online" for s in states.values())

        wait_until(ready, timeout, "the agent to connect to the broker and every device", every=0.25)
        return time.monotonic() - t0

    def depth(self) -> int | None:
        h = self.health()
        if h is None:
            return None
        return int(sum(s.get("depth", 0) for s in h.get("sinks", {}).values()))

    def metric(self, name: str) -> float | None:
        body = self.http("/metrics", timeout=5.0)
        if body is None:
            return None
        total = None
        for line in body.decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total


# --------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # cumulative CPU seconds per process, and "machine": every CPU's busy time
    rss_mb: float
    depth: int | None


@dataclass
class Sampler:
    """Once a second: CPU seconds of every process, the agent's RSS, its outbox depth."""

    agent: Agent
    peers: dict[str, Child]
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def snap(self) -> Sample:
        cpu = {"agent": self.agent.child.cpu_seconds(), "agent_wait": self.agent.child.sched_wait_seconds()}
        for name, child in self.peers.items():
            with contextlib.suppress(psutil.Error):
                cpu[name] = child.cpu_seconds()
        t = psutil.cpu_times()
        cpu["machine"] = float(
            t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        )
        own = os.times()
        cpu["runner"] = own.user + own.system
        return Sample(time.monotonic(), cpu, self.agent.child.rss_mb(), self.agent.depth())

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.snap())
            next_t = max(next_t + self.interval, time.monotonic() + 0.9 * self.interval)  # no catching up
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]


def cpu_pct(a: Sample, b: Sample, who: str) -> float | None:
    """CPU time delta / wall time delta, in % of one core."""
    if who not in a.cpu or who not in b.cpu or b.t <= a.t:
        return None
    return 100.0 * (b.cpu[who] - a.cpu[who]) / (b.t - a.t)


def foreign_pct(a: Sample, b: Sample) -> float | None:
    """CPU used on the machine by processes other than the bench's own, in % of one core."""
    if b.t <= a.t or "machine" not in a.cpu:
        return None
    ours = sum(b.cpu[k] - a.cpu[k] for k in b.cpu if k not in ("machine", "agent_wait") and k in a.cpu)
    return max(0.0, 100.0 * ((b.cpu["machine"] - a.cpu["machine"]) - ours) / (b.t - a.t))


def slope_per_min(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys against xs (seconds), per minute."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q * (len(s) - 1))))
    return s[k]

"""`picogate demo`: a broker, a simulated plant and the gateway between them, with a live view.

Start order: broker → plant (socat pty pair, Modbus servers, physics) → gateway → view.
Stop order is the reverse, and the gateway stops first on purpose: its polls end, then its outbox
is flushed to the still-running broker, then the plant and the broker go.  Ctrl-C (SIGINT) or
SIGTERM starts that clean stop; a second one cuts the flush short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.live import Live

from picogate._logging import TextFormatter
from picogate._paths import data_dir
from picogate.config import ConfigError, CoreConfig
from picogate.console import ConsoleSection, Role, Users
from picogate.demo._broker import Broker, make_broker
from picogate.demo._coap_node import CoapNode
from picogate.demo._pico import simulated_boards
from picogate.demo._plant import Plant
from picogate.demo._proc import LOOPBACK, DemoError, free_port
from picogate.demo._view import DemoInfo, DemoView, LogTail, hints
from picogate.gateway import Gateway, load_config
from picogate.modbus import ModbusRtuDevice, ModbusTcpDevice
from picogate.mqtt import MqttClient, MqttLost, Topics

log = logging.getLogger("picogate.demo")

REFRESH_S = 0.25
SUMMARY_EVERY_S = 2.0
DRAIN_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 15.0
BROKER_LINE = "demo broker: mqtt://{host}:{port}"
"""Printed on stdout once the broker is up, with --no-tui (tests and scripts read the port from it)."""

_PLANT_DEVICES = {"boiler": ModbusTcpDevice, "pump": ModbusTcpDevice, "tank": ModbusRtuDevice}


def example_config_path() -> Path:
    return data_dir("examples") / "gateway.yaml"


def demo_config(
    base: CoreConfig,
    *,
    plant: Plant,
    mqtt_port: int,
    metrics_port: int,
    state_dir: Path,
    mqtt_protocol: str | None = None,
    board_ports: dict[str, str] | None = None,
    coap_port: int | None = None,
    rules_dir: Path | None = None,
    console: ConsoleSection | None = None,
) -> CoreConfig:
    """The example config pointed at this run's broker, simulators and working directory."""
    devices: list[ModbusTcpDevice | ModbusRtuDevice] = []
    tcp_ports = {"boiler": plant.boiler_port, "pump": plant.pump_port}
    for device in base.section("devices"):
        if device.name in tcp_ports and isinstance(device, ModbusTcpDevice):
            devices.append(device.model_copy(update={"host": LOOPBACK, "port": tcp_ports[device.name]}))
        elif device.name == "tank" and isinstance(device, ModbusRtuDevice):
            devices.append(device.model_copy(update={"port": plant.tank_tty}))
    mqtt_update: dict[str, object] = {"host": LOOPBACK, "port": mqtt_port, "tls": None, "username": None}
    if mqtt_protocol is not None:
        mqtt_update["protocol"] = mqtt_protocol
    coap = base.section("coap")
    if coap is not None:  # the simulated CoAP node reports to this port
        coap = coap.model_copy(update={"bind": LOOPBACK, "port": coap_port or free_port()})
    return base.model_copy(
        update={
            "coap": coap,
            "gateway": base.gateway.model_copy(update={"data_dir": state_dir}),
            "mqtt": base.section("mqtt").model_copy(update=mqtt_update),
            "metrics": base.metrics.model_copy(update={"host": LOOPBACK, "port": metrics_port}),
            "outbox": base.outbox.model_copy(update={"path": None}),
            "devices": devices,
            "boards": [  # the simulated Picos (demo/_pico.py)
                b.model_copy(update={"port": (board_ports or {})[b.name], "serial": None})
                for b in base.section("boards")
                if b.name in (board_ports or {})
            ],
            "console": console,
            "rules": base.section("rules").model_copy(update={"dir": rules_dir})
            if base.section("rules") is not None and rules_dir is not None
            else base.section("rules"),
        }
    )


def demo_rules(workdir: Path) -> Path:
    """The example rules, copied to the working directory (once: a reused --workdir keeps your
    edits), so that editing them there shows hot reload without touching the installed files."""
    target = workdir / "rules"
    if not target.exists():
        shutil.copytree(data_dir("examples") / "rules", target)
    return target


DEMO_USER = "demo"


def demo_console(workdir: Path) -> tuple[ConsoleSection, str]:
    """The console's section for the demo, and the password of its engineer `demo` (a new one at
    every start, kept only in the users file's hash)."""
    users_file = workdir / "users.json"
    password = secrets.token_urlsafe(9)
    users = Users(users_file)
    if users.get(DEMO_USER) is None:
        users.add(DEMO_USER, Role.ENGINEER, password)
    else:
        users.set_password(DEMO_USER, password, role=Role.ENGINEER)
    section = ConsoleSection.model_validate(
        {"users": str(users_file), "alarms": {"history": str(workdir / "state" / "alarms.jsonl")}}
    )
    return section, password


def _check_plant_devices(cfg: CoreConfig, path: Path) -> dict[str, int]:
    """The example must describe the simulated plant; returns the unit id of each device."""
    found = {d.name: d for d in cfg.section("devices")}
    problems = []
    for name, kind in _PLANT_DEVICES.items():
        device = found.get(name)
        if device is None:
            problems.append(f"device {name!r} is missing")
        elif not isinstance(device, kind):
            problems.append(
                f"device {name!r} must be of type {'modbus_rtu' if kind is ModbusRtuDevice else 'modbus_tcp'}"
            )
    extra = sorted(set(found) - set(_PLANT_DEVICES))
    if extra:
        problems.append(f"devices {extra} are not part of the simulated plant")
    if problems:
        raise DemoError(
            f"{path}: the demo simulates boiler, pump (Modbus TCP) and tank (RTU): {'; '.join(problems)}"
        )
    return {name: found[name].unit_id for name in _PLANT_DEVICES}


# --------------------------------------------------------------------------- entry point


def run_demo(tui: bool, duration: float, workdir: Path | None) -> int:
    """Run the demo until Ctrl-C (or for `duration` seconds if > 0); 0 on success."""
    tui = tui and sys.stdout.isatty()
    with _workdir(workdir) as wd:
        try:
            return asyncio.run(_Demo(wd, tui=tui, duration=duration).main())
        except KeyboardInterrupt:  # Ctrl-C before our own handler was installed
            return 0
        except DemoError as exc:
            print(f"picogate demo: {exc}", file=sys.stderr)
            return 1


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="picogate-demo-") as tmp:
        yield Path(tmp)


class _Demo:
    def __init__(self, workdir: Path, *, tui: bool, duration: float) -> None:
        self.workdir = workdir
        self.tui = tui
        self.duration = duration
        self.stop = asyncio.Event()
        self.signals = 0
        self._started = time.monotonic()
        self.log_tail = LogTail()
        self.console_password = ""

    def _on_signal(self, main: asyncio.Task[int] | None) -> None:
        self.signals += 1
        self.stop.set()
        if self.signals == 2:
            log.warning("second interrupt: stopping without waiting for the outbox to drain")
            if main is not None:
                main.cancel()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, main)
        with self._terminal_logging():
            try:
                return await self._run()
            except asyncio.CancelledError:
                if self.signals:
                    return 0
                raise

    @contextlib.contextmanager
    def _terminal_logging(self) -> Iterator[None]:
        """With the live view the terminal belongs to the view: logs go to the view's tail and to
        `demo.log` in the workdir instead of stderr (they would tear the view apart)."""
        if not self.tui:
            yield
            return
        root = logging.getLogger()
        saved = root.handlers[:]
        log_file = logging.FileHandler(self.workdir / "demo.log", encoding="utf-8")
        log_file.setFormatter(TextFormatter())  # one line per record, secrets masked
        root.handlers[:] = [self.log_tail, log_file]
        try:
            yield
        finally:
            root.handlers[:] = saved
            log_file.close()

    async def _run(self) -> int:
        path = example_config_path()
        try:
            base = load_config(path)
        except ConfigError as exc:
            raise DemoError(f"the example configuration does not load:\n{exc}") from exc
        unit_ids = _check_plant_devices(base, path)

        broker: Broker = make_broker(self.workdir)  # raises DemoError (install hint) without mosquitto
        await broker.start()
        try:
            if not self.tui:
                print(BROKER_LINE.format(host=broker.host, port=broker.port), flush=True)
            async with Plant(self.workdir, unit_ids=unit_ids) as plant:
                with simulated_boards(
                    self.workdir, base.section("boards")
                ) as board_ports:  # starting is quick
                    console, password = demo_console(self.workdir)
                    self.console_password = password
                    cfg = demo_config(
                        base,
                        plant=plant,
                        mqtt_port=broker.port,
                        metrics_port=free_port(),
                        state_dir=self.workdir / "state",
                        rules_dir=demo_rules(self.workdir),
                        mqtt_protocol="3.1.1" if broker.kind != "mosquitto" else None,
                        board_ports=board_ports,
                        console=console,
                    )
                    return await self._with_gateway(cfg, broker, plant)
        finally:
            await broker.stop()

    async def _with_gateway(self, cfg: CoreConfig, broker: Broker, plant: Plant) -> int:
        topics = Topics(cfg.section("mqtt").base_topic, cfg.gateway.id)
        async with Gateway(cfg, drain_timeout=DRAIN_TIMEOUT_S) as gw:
            run = asyncio.create_task(gw.run(install_signals=False), name="gateway")
            ready = asyncio.create_task(gw.ready.wait(), name="gateway-ready")
            await asyncio.wait({run, ready}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                if run.done():
                    run.result()  # raises what stopped it
                gw.stop()
                await asyncio.gather(run, return_exceptions=True)
                raise DemoError(f"the gateway did not start within {READY_TIMEOUT_S:g} s")
            metrics = gw.http if gw.http.running else None
            info = DemoInfo(
                gateway_id=cfg.gateway.id,
                root=topics.root,
                broker_host=broker.host,
                broker_port=broker.port,
                broker_kind=broker.kind,
                metrics_url=f"http://{metrics.host}:{metrics.port}/metrics" if metrics is not None else None,
                console=f"{metrics.url}/console/  user {DEMO_USER}, password {self.console_password}"
                if metrics is not None and cfg.section("console") is not None
                else None,
                workdir=str(self.workdir),
                links={
                    "boiler": f"tcp :{plant.boiler_port}",
                    "pump": f"tcp :{plant.pump_port}",
                    "tank": f"rtu unit {plant.tank.unit_id}",
                    **(
                        {"yard": f"coap :{cfg.section('coap').port}"}
                        if cfg.section("coap") is not None
                        else {}
                    ),
                },
            )
            coap_node = (
                CoapNode(LOOPBACK, cfg.section("coap").port) if cfg.section("coap") is not None else None
            )
            if coap_node is not None:
                await coap_node.__aenter__()
            view = DemoView(gw, info, log_tail=self.log_tail)
            watcher = (
                asyncio.create_task(self._watch(info, view), name="demo-subscriber") if self.tui else None
            )
            try:
                if self.tui:
                    await self._live(view, run)
                else:
                    await self._log_summaries(view, run)
            finally:
                if coap_node is not None:
                    await coap_node.__aexit__()
                gw.stop()
                if self.tui:
                    print(
                        f"stopping: flushing the outbox to the broker (up to {DRAIN_TIMEOUT_S:g} s) …",
                        flush=True,
                    )
                try:
                    await run
                finally:
                    if watcher is not None:
                        watcher.cancel()
                        await asyncio.gather(watcher, return_exceptions=True)
            depth = gw.parts.outbox.depth()
        flushed = "outbox flushed" if depth == 0 else f"{depth} records left in the outbox ({self.workdir})"
        print(
            f"demo stopped: {gw.pipeline.received} readings, {gw.pipeline.published} published, {flushed}",
            flush=True,
        )
        return 0

    async def _until_stopped(self, run: asyncio.Task[None], interval: float) -> bool:
        """Wait `interval`; False once it is time to stop (signal, duration, gateway ended)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await self.stop.wait()
        if self.duration > 0 and time.monotonic() - self._started >= self.duration:
            self.stop.set()
        return not (self.stop.is_set() or run.done())

    async def _log_summaries(self, view: DemoView, run: asyncio.Task[None]) -> None:
        for line in hints(view.info):
            print(line, flush=True)
        self._started = time.monotonic()
        last = self._started
        while await self._until_stopped(run, 0.2):
            if time.monotonic() - last >= SUMMARY_EVERY_S:
                last = time.monotonic()
                log.info("%s", view.summary())
        log.info("%s", view.summary())

    async def _live(self, view: DemoView, run: asyncio.Task[None]) -> None:
        console = Console()
        self._started = time.monotonic()
        with Live(
            view.render(console.width, console.height),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        ) as live:
            while await self._until_stopped(run, REFRESH_S):
                live.update(view.render(console.width, console.height), refresh=True)
            live.update(view.render(console.width, console.height), refresh=True)

    async def _watch(self, info: DemoInfo, view: DemoView) -> None:
        """Subscribe to the demo broker and feed the view's message panel; reconnect if dropped."""
        while True:
            client = MqttClient(
                host=info.broker_host,
                port=info.broker_port,
                client_id=f"picogate-demo-view-{os.getpid()}",
                protocol="3.1.1",
                keepalive=30,
                on_message=view.on_message,
            )
            try:
                await client.connect(timeout=5)
                client.subscribe(f"{info.root}/#", qos=0)
                assert client.lost is not None
                await client.lost
            except MqttLost as exc:
                log.debug("demo subscriber: %s", exc)
            finally:
                await client.disconnect()
            await asyncio.sleep(1.0)

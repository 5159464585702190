"""The demo's simulated Pico boards: the real firmware on MicroPython's unix port (picogate.simboard).

Each `boards:` entry of the example gets a board directory under the demo's working directory with
the firmware and a scenario (a door that opens and closes, a part counter, a tank level that rises
and falls); the gateway is pointed at the simulated board's serial port.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from picogate.demo._proc import DemoError
from picogate.pico import BoardConfig

SCENARIO = {
    "pins": {
        "2": {"seq": [[0, 0], [4000, 1], [6000, 0]], "period_ms": 10000},  # the door opens for 2 s
        "3": {"pulse_ms": 250},  # 4 parts a second
    },
    "adc": {"26": {"seq": [[0, 0.5], [15000, 2.5]], "period_ms": 30000}, "27": {"v": 1.65, "noise": 0.01}},
    "temp": 27.5,
}


@contextlib.contextmanager
def simulated_boards(workdir: Path, boards: list[BoardConfig]) -> Iterator[dict[str, str]]:
    """Start one simulated board per entry; yields {board name: serial port}."""
    if not boards:
        yield {}
        return
    try:
        from picogate.simboard import SimBoard, SimBoardError, install_firmware
    except ImportError as exc:  # pragma: no cover - part of the package
        raise DemoError(f"the simulated Pico is not available: {exc}") from exc
    started: list[SimBoard] = []
    try:
        ports: dict[str, str] = {}
        for i, b in enumerate(boards):
            d = install_firmware(workdir / f"pico-{b.name}", scenario=json.dumps(SCENARIO))
            try:
                sim = SimBoard(d, uid=f"E66141040000{i:04X}", board=b.board).start()
            except SimBoardError as exc:
                raise DemoError(f"simulated Pico {b.name}: {exc}") from exc
            started.append(sim)
            ports[b.name] = sim.port
        yield ports
    finally:
        for sim in started:
            sim.stop()

"""`picogate demo` runs the example rules (examples/rules/, copied to its working directory): the
rules status is published, the LET point is published like a real one, and editing a copied rule
file while the demo runs reloads it (an error is reported, the last good set keeps running)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from _agent import recorder
from picogate.config import load_config
from picogate.rules import compile_rules

REPO = Path(__file__).resolve().parents[2]
ROOT = "picogate/demo"
STATUS = f"{ROOT}/rules/status"
BROKER_LINE = re.compile(r"^demo broker: mqtt://(?P<host>[\d.]+):(?P<port>\d+)$")


def _lines(stream: IO[str], into: queue.Queue[str], keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        into.put(line.rstrip("\n"))


def test_example_rules_compile_against_the_example_config() -> None:
    from picogate._registry import PointRegistry
    from picogate.modbus._source import build_lines

    cfg = load_config(REPO / "examples" / "gateway.yaml")
    registry = PointRegistry()
    for line in build_lines(cfg.devices, registry=registry, emit=None, status_changed=None):  # type: ignore[arg-type]
        line.register()
    files = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "examples" / "rules").glob("*.rules")}
    ruleset = compile_rules(files, list(registry))
    assert {"boiler_overheat", "tank_high", "pump.power_kw"} <= {r.id for r in ruleset.rules}
    assert [p.key for p in ruleset.lets] == ["pump.power_kw"]


def test_demo_runs_the_example_rules_and_reloads_edits(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "picogate",
            "demo",
            "--no-tui",
            "--duration",
            "60",
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_lines, args=(proc.stdout, lines, out), daemon=True),
        threading.Thread(target=_lines, args=(proc.stderr, queue.Queue(), err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 20
        match = None
        while match is None:
            try:
                match = BROKER_LINE.match(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no broker line from the demo; stderr:\n{''.join(err)}")
        try:
            with recorder(match["host"], int(match["port"]), f"{ROOT}/#") as rec:
                status = rec.wait_topic(STATUS, timeout=10)[0].json()
                assert status["ok"], status
                assert status["files"] == ["boiler.rules", "tank.rules"]
                assert {"boiler_overheat", "burner_firing", "tank_high", "pump.power_kw"} <= set(
                    status["rules"]
                )
                topic = f"{ROOT}/data/pump/power_kw"
                good = rec.wait_for(
                    lambda ms: any(m.topic == topic and m.json()["q"] == "good" for m in ms),
                    timeout=10,
                    what="a good power_kw",
                )
                power = next(m.json() for m in good if m.topic == topic and m.json()["q"] == "good")
                assert power["unit"] == "kW"
                assert 1.0 < power["v"] < 10.0  # about 400 V × 11.35 A
                # an operator's typo in the copy the demo runs
                rules = tmp_path / "rules" / "tank.rules"
                rules.write_text(
                    rules.read_text(encoding="utf-8").replace("tank.level > 75", "tank.levl > 75")
                )
                bad = rec.wait_for(
                    lambda ms: any(m.topic == STATUS and not m.json()["ok"] for m in ms),
                    timeout=10,
                    what="error",
                )
                error = next(m.json() for m in bad if m.topic == STATUS and not m.json()["ok"])["errors"][0]
                assert error["file"] == "tank.rules"
                assert error["suggestion"] == "tank.level"
        except AssertionError as exc:
            proc.terminate()
            proc.wait(10)
            raise AssertionError(f"{exc}\n--- demo stderr ---\n{''.join(err)[-6000:]}") from exc
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo's clean stop
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for reader in readers:
            reader.join(5)
    stderr = "".join(err)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "| rules " in stderr  # the summary line shows the rules' states
    assert (REPO / "examples" / "rules" / "tank.rules").read_text().count(
        "tank.levl"
    ) == 0  # the original is untouched

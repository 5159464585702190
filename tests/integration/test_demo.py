"""`picogate demo` end to end, as a newcomer runs it: a real subprocess, a real terminal (tmux).

- the demo's broker carries data of all simulated devices (the RTU tank and the CoAP node included), and a set
  command to the boiler's setpoint is answered `ok` and changes what the simulated boiler does;
- `examples/gateway.yaml`, the demo's config, passes `picogate config check` as it is;
- the live view renders in a terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from _agent import Msg, recorder
from _demo import running_demo

REPO = Path(__file__).resolve().parents[2]
ROOT = "picogate/demo"


def _index_after(messages: list[Msg], start: int, topic: str, value: object) -> int | None:
    for i in range(start, len(messages)):
        if messages[i].topic == topic and messages[i].json()["v"] == value:
            return i
    return None


def test_demo_publishes_all_devices_and_obeys_commands(tmp_path: Path) -> None:
    with running_demo(tmp_path, 8) as demo:
        host, port = demo.host, demo.port
        with recorder(host, port, f"{ROOT}/#") as rec:
            # Data from every device, the tank on the RTU line included.
            for point in ("boiler/temperature", "pump/speed", "tank/level", "yard/temperature"):
                first = rec.wait_topic(f"{ROOT}/data/{point}", timeout=10)[0].json()
                assert first["q"] == "good", (point, first)
                assert isinstance(first["v"], int | float), (point, first)
            assert rec.on(f"{ROOT}/data/boiler/setpoint")[-1].json()["v"] == 65.0
            assert 50 <= rec.on(f"{ROOT}/data/boiler/temperature")[-1].json()["v"] <= 80

            # A setpoint below the water temperature puts the flame out; one above lights it again.
            # The flame is the boiler's own thermostat acting on the setpoint it reads back.
            for rid, setpoint, flame in (("low", 20, False), ("high", 90, True)):
                mark = len(rec.messages)
                rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", {"v": setpoint, "id": rid})
                got = rec.wait_for(
                    lambda ms, rid=rid: any(
                        m.topic == f"{ROOT}/cmd/boiler/setpoint/result" and m.json()["id"] == rid for m in ms
                    ),
                    timeout=5,
                    what=f"result of {rid}",
                )
                result = next(m.json() for m in got if m.topic.endswith("/result") and m.json()["id"] == rid)
                assert result == {"id": rid, "ok": True, "code": "ok", "error": ""}
                rec.wait_for(
                    lambda ms, mark=mark, sp=setpoint: (
                        _index_after(ms, mark, f"{ROOT}/data/boiler/setpoint", float(sp)) is not None
                    ),
                    timeout=5,
                    what=f"setpoint {setpoint} read back",
                )
                rec.wait_for(
                    lambda ms, mark=mark, fl=flame: (
                        _index_after(ms, mark, f"{ROOT}/data/boiler/flame", fl) is not None
                    ),
                    timeout=5,
                    what=f"flame {flame} after setpoint {setpoint}",
                )
        code = demo.proc.wait(timeout=25)
    out, err = demo.out, demo.err
    stderr = "".join(err)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "boiler received a Modbus write: setpoint" in stderr  # the simulator saw the writes
    assert any("demo stopped:" in line and "outbox flushed" in line for line in out), "".join(out)
    # Neither the broker nor socat outlives the demo (both name the workdir on their command line).
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps, ps


def test_example_config_checks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "picogate", "config", "check", "examples/gateway.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "examples/gateway.yaml: OK (3 Modbus devices, 1 Pico board, 1 CoAP device; 21 points)"
    )


@pytest.mark.parametrize(("columns", "rows"), [(160, 50), (80, 24)])
def test_live_view_renders_in_a_terminal(tmp_path: Path, columns: int, rows: int) -> None:
    """The devices, a value, the broker's port and the try-it commands, in a large terminal and in
    the classic 80 × 24."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    socket = f"picogate-test-{uuid.uuid4().hex[:8]}"  # a private tmux server, never the user's
    picogate = Path(sys.executable).with_name("picogate")
    # (without the COLUMNS/LINES a test runner may export: the view sizes itself to the pane)
    command = f"env -u COLUMNS -u LINES {picogate} demo --duration 6 --workdir {tmp_path / 'wd'}; echo DEMO-EXIT=$?; sleep 60"

    def tmux_run(*args: str) -> str:
        return subprocess.run(
            [tmux, "-L", socket, *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    tmux_run("new-session", "-d", "-s", "demo", "-x", str(columns), "-y", str(rows), command)
    try:
        screen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = tmux_run("capture-pane", "-p", "-t", "demo")
            # (the hints too: the first frames may be drawn before tmux gives the pane its size)
            if (
                all(name in screen for name in ("boiler", "pump", "tank", "line1_io", "yard"))
                and re.search(r"temperature\s+\d+\.\d\s+°C", screen)
                and "mosquitto_sub -h" in screen
            ):
                break
        else:
            pytest.fail(f"the live view never showed the devices and a value:\n{screen}")
        assert "● online" in screen
        assert "mosquitto_sub -h 127.0.0.1 -p" in screen
        port = re.search(r"broker:\s+mosquitto on 127\.0\.0\.1:(\d+)", screen)
        assert port is not None, screen
        assert f"mosquitto_pub -h 127.0.0.1 -p {port.group(1)}" in screen
        assert "picogate/demo/cmd/boiler/setpoint/set" in screen
        assert all(len(line) <= columns for line in screen.splitlines())
        assert "Traceback" not in screen

        while time.monotonic() < deadline and "DEMO-EXIT=" not in screen:
            time.sleep(0.5)
            screen = tmux_run("capture-pane", "-p", "-t", "demo")
        assert "DEMO-EXIT=0" in screen, screen
        assert "Traceback" not in screen
    finally:
        subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True, timeout=10)

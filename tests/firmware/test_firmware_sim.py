"""The whole firmware on a simulated board (MicroPython unix port under picogate.simboard), driven
over its serial port by a small test host (tests/firmware/_host.py): handshake, config, commands,
readings, modes, safe state, retransmits, garbage and 0x03 bytes both ways, kill mid-stream."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _host import Host, encode

from picogate.simboard import SimBoard, install_firmware

pytestmark = pytest.mark.integration

SCENARIO = {
    "pins": {"2": {"seq": [[0, 0], [200, 1]], "period_ms": 400}, "3": {"pulse_ms": 10}},
    "adc": {"26": 1.652},
    "temp": 25.0,
}
CFG: dict[str, Any] = {
    "v": 1,
    "name": "test",
    "hb_ms": 300,
    "safe_ms": 60000,
    "io": [
        {"id": "door", "k": "di", "pin": 2, "pull": "up", "deb_ms": 20},
        {"id": "parts", "k": "cnt", "pin": 3, "pull": "up", "edge": "rise", "every_ms": 200},
        {"id": "valve", "k": "do", "pin": 15, "init": False, "safe": False},
        {"id": "fan", "k": "pwm", "pin": 16, "freq": 1000, "init": 0.25, "safe": 0.0},
        {"id": "level", "k": "adc", "pin": 26, "os": 16, "every_ms": 200},
        {"id": "cpu", "k": "temp", "every_ms": 200},
    ],
}


def make_board(tmp_path: Path, scenario: dict[str, Any] | None = None, **kw: Any) -> SimBoard:
    d = install_firmware(tmp_path / "board", scenario=json.dumps(scenario or SCENARIO))
    env = {"PICOGATE_BOOT_WINDOW_MS": "200"}
    return SimBoard(d, env=env, **kw).start()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoard]:
    b = make_board(tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def host(board: SimBoard) -> Iterator[Host]:
    h = Host(board.port)
    try:
        yield h
    finally:
        h.close()


def connect(board: SimBoard, host: Host, cfg: dict[str, Any] | None = CFG) -> dict[str, Any]:
    board.wait_for_output(b"@0 hello ")
    hello = host.hello()
    if cfg is not None:
        res = host.push_config(cfg)
        assert res is not None
        assert res["ok"], res
    return hello


def test_hello_config_commands_and_readings(board: SimBoard, host: Host) -> None:
    hello = connect(board, host, cfg=None)
    assert hello["proto"] == 1
    assert hello["uid"] == "E6614103E7000001"
    assert hello["board"] == "pico"
    assert hello["hash"] == "dev"
    assert hello["cfg"] is None
    assert hello["mode"] == "run"
    assert hello["boots"] == 1
    assert set(hello["caps"]) >= {"di", "cnt", "do", "pwm", "adc", "temp"}
    fw = Path(__file__).resolve().parents[2] / "firmware" / "picogate_fw"
    assert ("mb" in hello["caps"]) == (fw / "mb_master.py").exists()
    assert len(hello["sid"]) == 8
    res = host.push_config(CFG, part_size=100)  # several parts
    assert res is not None
    assert res["ok"]
    assert len(res["cfg"]) == 12
    assert host.command("set", '{"id":"valve","v":true}') == {"ok": True, "v": True}
    assert host.command("set", '{"id":"fan","v":0.5}') == {"ok": True, "v": 0.5}
    host.wait(
        lambda: host.readings().get("valve") == "T" and host.readings().get("fan") == "0.5", what="outputs"
    )
    host.wait(lambda: int(host.readings().get("parts", "0")) > 5, what="counted edges")
    host.wait(
        lambda: {"door=T", "door=F"} <= {v for f in host.of_type("rd") for v in (f[3] or "").split()},
        what="door both ways",
    )
    r = host.readings()
    assert r["level"] == "1.652"
    assert abs(float(r["cpu"]) - 25.0) < 0.2
    hb = json.loads(host.wait(lambda: host.of_type("hb"), what="hb")[-1][3])
    assert set(hb) == {"ticks", "q", "drop", "bad", "mem", "up", "safe", "lag"}
    assert hb["ticks"] < 2**30
    # errors from commands
    assert host.command("set", '{"id":"nope","v":true}')["code"] == "unknown_point"  # type: ignore[index]
    assert host.command("set", '{"id":"valve","v":3}')["code"] == "bad_type"  # type: ignore[index]
    assert host.command("set", '{"id":"fan","v":1.5}')["code"] == "out_of_range"  # type: ignore[index]
    assert host.command("set", '{"id":"level","v":1}')["code"] == "read_only"  # type: ignore[index]
    assert host.command("set", "not json")["code"] == "bad_request"  # type: ignore[index]
    assert host.command("read", '{"ids":["nope"]}')["code"] == "unknown_point"  # type: ignore[index]
    host.frames.clear()
    assert host.command("read", '{"ids":["level"]}') == {"ok": True}
    host.wait(lambda: "level" in host.readings(), what="the reading asked for")
    # the same configuration again: outputs are not disturbed
    assert host.command("set", '{"id":"valve","v":true}') == {"ok": True, "v": True}
    res = host.push_config(CFG)
    assert res is not None
    assert res["ok"]
    host.frames.clear()
    assert host.command("read", "{}") == {"ok": True}
    host.wait(lambda: "valve" in host.readings(), what="full report")
    assert host.readings()["valve"] == "T"


def test_bad_config_keeps_the_old_one_and_the_good_one_survives_a_reset(board: SimBoard, host: Host) -> None:
    connect(board, host)
    good_hash = host.hello()["cfg"]
    bad = dict(CFG, io=[*CFG["io"], {"id": "x", "k": "adc", "pin": 5}])
    res = host.push_config(bad)
    assert res == {
        "ok": False,
        "errors": [
            {
                "field": "io[6].pin",
                "msg": "GP5 has no ADC: ADC pins are GP26, GP27, GP28 (GP29 on some boards)",
            }
        ],
    }
    assert host.hello()["cfg"] == good_hash
    assert host.command("set", '{"id":"valve","v":true}') == {"ok": True, "v": True}  # still running
    # out-of-order parts are refused too
    assert host.command("cfg", '2/2 "x"}')["ok"] is False  # type: ignore[index]
    # the board boots into the stored config
    pos = board.output_pos()
    assert host.command("reset") == {"ok": True}
    board.wait_for_output(b"@0 hello ", since=pos)
    host.close()
    h2 = Host(board.port)
    try:
        hello = h2.hello()
        assert hello["cfg"] == good_hash
        assert hello["boots"] == 2 or hello["boots"] == 1
        h2.wait(lambda: "level" in h2.readings(), what="readings from the stored config")
    finally:
        h2.close()


def test_retransmit_and_duplicates(board: SimBoard, host: Host) -> None:
    connect(board, host)
    host.auto_ack = False
    host.frames.clear()
    host.wait(
        lambda: len({f[1] for f in host.of_type("rd")}) < len(host.of_type("rd")), what="a resent rd frame"
    )
    host.auto_ack = True
    # the same seq twice: acted on once, acknowledged twice with the same result
    seq = host.send("set", '{"id":"fan","v":0.75}')
    host.wait(lambda: seq in host.acks, what="first ack")
    first = host.acks.pop(seq)
    host.send("set", '{"id":"fan","v":0.1}', seq=seq)
    host.wait(lambda: seq in host.acks, what="second ack")
    assert host.acks[seq] == first
    host.frames.clear()
    host.wait(lambda: host.readings().get("fan") == "0.75", what="fan at 0.75")
    host.pump(1.0)  # more full reports
    assert "fan=0.1" not in " ".join(f[3] or "" for f in host.of_type("rd"))


def test_garbage_and_ctrl_c_both_ways_are_dropped_and_counted(board: SimBoard, host: Host) -> None:
    connect(board, host)
    rng = random.Random(4)
    for _ in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        board.inject(junk + b"\x03", to="board")
        board.inject(junk, to="host")
    board.inject(b"#" + b"9" * 3000 + b"\n", to="board")  # oversized
    board.inject(
        encode("#", 5, "set", '{"id":"valve","v":true}')[:-10] + b"00000000\n", to="board"
    )  # bad crc
    board.inject(b"\n", to="board")
    # commands keep working (a frame glued to junk may be lost: the host resends it)
    for _ in range(3):
        try:
            assert host.command("set", '{"id":"valve","v":true}', timeout=2) == {"ok": True, "v": True}
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("no ack after garbage")
    host.frames.clear()
    hb = json.loads(host.wait(lambda: host.of_type("hb"), what="hb")[-1][3])
    assert hb["bad"] >= 3
    assert board.mode == "main"
    assert board.restarts == 0


def test_killed_mid_stream_restarts_with_a_new_session(board: SimBoard, host: Host) -> None:
    connect(board, host)
    hello = host.hello()
    host.wait(lambda: len(host.of_type("rd")) > 5, what="readings")
    pos = board.output_pos()
    board.kill()
    board.wait_for_output(b"@0 hello ", since=pos)
    h2 = Host(board.port)  # the port stayed (a crash is no USB reset)
    try:
        again = h2.hello()
        assert again["sid"] != hello["sid"]
        assert again["cfg"] == hello["cfg"]  # booted into the stored configuration
        assert again["boots"] == 2
        h2.wait(lambda: "parts" in h2.readings(), what="readings after the restart")
    finally:
        h2.close()


def test_safe_state_after_host_silence(board: SimBoard, host: Host) -> None:
    connect(board, host, cfg=dict(CFG, safe_ms=500))
    assert host.command("set", '{"id":"valve","v":true}') == {"ok": True, "v": True}
    assert host.command("set", '{"id":"fan","v":0.9}') == {"ok": True, "v": 0.9}
    host.frames.clear()
    # stay silent (no frames to the board, not even acks) until a heartbeat says safe
    host.auto_ack = False
    host.wait(lambda: any(json.loads(f[3] or "{}")["safe"] for f in host.of_type("hb")), what="safe state")
    # the board could not deliver its readings meanwhile (nothing was acknowledged): the host
    # comes back, and the outputs are in their safe state, and stay there
    host.auto_ack = True
    host.hello()
    host.frames.clear()
    host.wait(lambda: host.readings().get("valve") == "F" and host.readings().get("fan") == "0", what="safe")
    host.wait(
        lambda: [f for f in host.of_type("hb") if not json.loads(f[3] or "{}")["safe"]], what="safe over"
    )
    host.frames.clear()
    assert host.command("read", "{}") == {"ok": True}
    host.wait(lambda: "valve" in host.readings(), what="full report")
    assert host.readings()["valve"] == "F"


def test_maintenance_from_the_link_and_left_by_reset(board: SimBoard, host: Host) -> None:
    connect(board, host)
    pos = board.output_pos()
    assert host.command("maint") == {"ok": True}
    board.wait_for_output(b"maintenance mode (pg_maint)", since=pos)
    board.wait_for_output(b">>> ", since=pos)
    assert board.mode == "repl"
    host.close()
    h2 = Host(board.port)
    try:
        pos = board.output_pos()
        h2.ser.write(b"\x04")  # soft reset at the REPL: the application starts again
        board.wait_for_output(b"@0 hello ", since=pos)
        assert h2.hello()["mode"] == "run"
    finally:
        h2.close()


def test_ctrl_c_in_the_boot_window_gives_the_repl(tmp_path: Path) -> None:
    d = install_firmware(tmp_path / "board", scenario=json.dumps(SCENARIO))
    b = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "5000"}).start()
    try:
        b.wait_for_output(b"picogate: starting")
        b.inject(b"\x03")
        b.wait_for_output(b"boot interrupted: REPL")
        b.wait_for_output(b">>> ")
        assert (d / "pg_boots").read_text() == "0"
    finally:
        b.stop()


def test_safe_mode_after_three_crashes(tmp_path: Path) -> None:
    d = install_firmware(tmp_path / "board", scenario=json.dumps(SCENARIO))
    (d / "picogate_fw" / "app.py").write_text("raise RuntimeError('broken on purpose')\n")
    b = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "50"}).start()
    try:
        out = b.wait_for_output(b"safe mode after 3 failed boots", timeout=30)
        assert b"Last crash: boot 3: RuntimeError: broken on purpose" in out
        b.wait_for_output(b">>> ")
        assert b.exits == [75, 75, 75, 0]  # three resets, then main.py returned to the REPL
        crash = (d / "pg_crash.txt").read_text()
        assert crash.startswith("boot 3: RuntimeError: broken on purpose\nTraceback")
        assert (d / "pg_boots").read_text() == "0"  # the next reset tries the application again
    finally:
        b.stop()


def test_unacknowledged_readings_go_to_the_next_host_session(board: SimBoard, host: Host) -> None:
    connect(board, host)
    host.auto_ack = False
    host.frames.clear()
    host.wait(lambda: len(host.of_type("rd")) >= 3, what="unacknowledged readings")
    unacked = {f[3] for f in host.of_type("rd")}
    host.close()  # the agent stops without acknowledging
    h2 = Host(board.port, sid="feedf00d")
    try:
        h2.hello()
        h2.wait(lambda: unacked & {f[3] for f in h2.of_type("rd")}, what="the old readings again")
    finally:
        h2.close()


def test_link_down_after_resends_then_the_hosts_hello_restores_it(board: SimBoard, host: Host) -> None:
    connect(board, host)
    host.auto_ack = False
    host.frames.clear()
    # 5 resends 300 ms apart go unanswered: the board falls back to sending hello every hb_ms
    host.wait(
        lambda: len(host.of_type("hello")) >= 2, timeout=15, what="hellos from a board whose link is down"
    )
    n = len(host.frames)
    host.pump(0.5)
    assert not [f for f in host.frames[n:] if f[2] in ("hb", "rd")]  # a down link carries only hellos
    host.auto_ack = True
    host.hello()
    host.frames.clear()
    host.wait(lambda: host.of_type("hb") and host.of_type("rd"), what="heartbeats and readings again")


def test_boot_command_enters_the_uf2_bootloader(board: SimBoard, host: Host) -> None:
    connect(board, host, cfg=None)
    assert host.command("boot") == {"ok": True}
    for _ in range(100):  # the port goes away: watch the board, not the port
        if board.mode == "bootloader":
            break
        time.sleep(0.05)
    assert board.mode == "bootloader"
    assert board.exits[-1] == 76


def test_watchdog_resets_a_hung_application_and_is_fed_by_a_healthy_one(tmp_path: Path) -> None:
    env = {"PICOGATE_BOOT_WINDOW_MS": "50", "PICOGATE_WDT_MS": "400"}
    d = install_firmware(tmp_path / "hung", scenario="{}")
    (d / "picogate_fw" / "app.py").write_text("def run(wdt, boots, crash):\n    while True:\n        pass\n")
    b = SimBoard(d, env=env).start()
    try:
        b.wait_for_output(b"safe mode after 3 failed boots", timeout=30)
        assert b.wdt_resets == 3
        assert b.exits[:3] == [-9, -9, -9]
    finally:
        b.stop()
    d = install_firmware(tmp_path / "healthy", scenario="{}")
    b = SimBoard(d, env=env).start()
    try:
        b.wait_for_output(b"@0 hello ")
        time.sleep(2.0)  # five watchdog periods
        assert b.wdt_resets == 0
        assert b.restarts == 0
    finally:
        b.stop()


def test_sensors_through_the_drivers_and_a_failing_one(tmp_path: Path) -> None:
    scenario = {
        "i2c": {"0": {"68": {"kind": "sht3x", "t": 22.5, "h": 41.0}, "69": {"kind": "sht3x", "fail": True}}},
        "onewire": {"4": {"28FF4A6B12160301": 21.5}},
        "dht22": {"5": "fail"},
    }
    cfg = {
        "v": 1,
        "hb_ms": 300,
        "io": [
            {"id": "air", "k": "sht3x", "i2c": 0, "sda": 8, "scl": 9, "addr": 68, "every_ms": 100},
            {"id": "gone", "k": "sht3x", "i2c": 0, "sda": 8, "scl": 9, "addr": 69, "every_ms": 100},
            {"id": "tank", "k": "ds18b20", "pin": 4, "every_ms": 100},
            {"id": "room", "k": "dht22", "pin": 5, "every_ms": 100},
        ],
    }
    b = make_board(tmp_path, scenario)
    h = Host(b.port)
    try:
        hello = connect(b, h, cfg)
        assert {"ds18b20", "dht22", "sht3x", "mb"} <= set(hello["caps"])
        h.wait(
            lambda: h.readings().get("air_t") == "22.5" and h.readings().get("tank") == "21.5", what="values"
        )
        r = h.readings()
        assert r["air_h"] == "41"
        assert r["gone_t"].startswith("?")  # bad quality; the others go on
        assert r["room_t"].startswith("?")
        h.wait(lambda: len(h.of_type("evt")) >= 2, what="sensor events")
        failed = {json.loads(f[3] or "{}")["id"] for f in h.of_type("evt")}
        assert failed == {"gone", "room"}
    finally:
        h.close()
        b.stop()


def test_maintenance_lets_mpremote_in_and_its_reset_starts_the_application(
    board: SimBoard, host: Host
) -> None:
    import subprocess
    import sys

    connect(board, host)
    pos = board.output_pos()
    assert host.command("maint") == {"ok": True}
    board.wait_for_output(b">>> ", since=pos)
    host.close()
    mpremote = str(Path(sys.executable).parent / "mpremote")
    src = board.directory.parent / "note.txt"
    src.write_text("written at the REPL\n")
    r = subprocess.run(
        [
            mpremote,
            "connect",
            board.port,
            "fs",
            "cp",
            str(src),
            ":note.txt",
            "+",
            "exec",
            "print(open('note.txt').read())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "written at the REPL" in r.stdout
    pos = board.output_pos()
    r = subprocess.run([mpremote, "connect", board.port, "reset"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    board.wait_for_output(b"@0 hello ", since=pos)
    assert board.exits[-1] == 75  # machine.reset()
    assert (board.directory / "note.txt").read_text() == "written at the REPL\n"

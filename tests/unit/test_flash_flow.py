"""flash_board's decisions and error paths against a scripted board connection (the real path runs
against simulated boards in tests/integration/test_flash_sim.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from picogate.flash import _deploy
from picogate.flash._board import Probe
from picogate.flash._errors import BoardNotAnswering, FlashError
from picogate.flash._flash import Builder, FlashOptions, _identity, flash_board

MPY = 6 | (3 << 8)


class FakeConn:
    """Plays a board: `probe` answers, INFO's reply, the hello after the reset."""

    def __init__(
        self, port: str, *, probe: Probe, info: Any, hello: dict[str, Any] | None, maint_ok: bool = True
    ):
        self.port = port
        self._probe = probe
        self._info = info
        self._hello = hello
        self._maint_ok = maint_ok
        self.in_raw = False
        self.calls: list[str] = []
        self.written: dict[str, bytes] = {}
        self.later_probes: list[Probe] = []
        self.raw_failures = 0
        self.probes = 0

    def open(self, *, wait: float = 0.0) -> None:
        self.calls.append("open")

    def close(self) -> None:
        self.calls.append("close")

    def probe(self, timeout: float = 1.5, *, interrupt: bool = True) -> Probe:
        self.probes += 1
        if self.probes > 1 and self.later_probes:
            return self.later_probes.pop(0)
        return self._probe

    def request(self, type_: str, *, tries: int = 5) -> dict[str, Any] | None:
        self.calls.append(type_)
        return {"ok": True} if type_ == "maint" and self._maint_ok else None

    def wait_reboot(self, **_kw: float) -> None:
        self.calls.append("reboot")

    def interrupt_boot(self, wait: float, *, on_wait: Any = None) -> None:
        self.calls.append("ctrl-c")

    def enter_raw(self, *, attempts: int = 4) -> None:
        if self.raw_failures:
            self.raw_failures -= 1
            raise BoardNotAnswering("no raw REPL", where=self.port)
        self.in_raw = True
        self.calls.append("raw")

    def exec_json(self, code: str, *, timeout: float = 10.0) -> Any:
        if isinstance(self._info, Exception):
            raise self._info
        return self._info

    def exec(self, code: str, *, timeout: float = 10.0) -> bytes:
        self.calls.append("exec")
        return b"committed\r\n" if "committed" in code else b""

    def write_file(self, path: str, data: bytes, progress: Any = None) -> None:
        self.written[path] = data

    def reset(self) -> None:
        self.calls.append("reset")
        self.in_raw = False

    def wait_gone(self, within: float = 3.0) -> None:
        pass

    def wait_hello(self, timeout: float) -> dict[str, Any]:
        if self._hello is None:
            raise BoardNotAnswering("the application did not say hello", where=self.port)
        return self._hello


@pytest.fixture
def builder(tmp_path: Path) -> Builder:
    return Builder(cache=tmp_path / "cache")


def _info(**kw: Any) -> dict[str, Any]:
    base = {
        "live": {},
        "staged": {},
        "manifest": None,
        "id": None,
        "mpy": MPY,
        "mp": "1.25.0",
        "machine": "Raspberry Pi Pico W with RP2040",
        "platform": "rp2",
        "uid": "E66141040396312A",
        "hashlib": True,
    }
    base.update(kw)
    return base


def _run(builder: Builder, **kw: Any) -> tuple[Any, FakeConn]:
    conns: list[FakeConn] = []

    def factory(port: str) -> FakeConn:
        conns.append(FakeConn(port, **kw))
        return conns[-1]

    opts = FlashOptions(builder=builder, name="press1")
    res = flash_board("/dev/ttyACM0", opts, conn_factory=factory)  # type: ignore[arg-type]
    return res, conns[0]


def test_a_running_board_goes_through_maint_and_gets_every_file(builder: Builder) -> None:
    fw = builder(MPY)
    hello = {"hash": fw.hash, "uid": "E66141040396312A", "fw": fw.version}
    res, conn = _run(builder, probe=Probe("app", {"uid": "E66141040396312A"}), info=_info(), hello=hello)
    assert res.ok, res.error
    assert res.result == "flashed"
    assert res.board == "pico_w"
    assert res.entered_by == "link maint"
    assert conn.calls[:4] == ["open", "maint", "reboot", "raw"]
    assert set(conn.written) == {f"pg_new/{p}" for p in fw.files} | {"pg_new/pg_fw.json"}
    assert json.loads(conn.written["pg_new/pg_fw.json"])["hash"] == fw.hash


def test_no_maint_ack_resets_and_catches_the_boot_window(builder: Builder) -> None:
    fw = builder(MPY)
    hello = {"hash": fw.hash, "uid": "E66141040396312A"}
    res, conn = _run(builder, probe=Probe("app", {}), info=_info(), hello=hello, maint_ok=False)
    assert res.ok, res.error
    assert res.entered_by == "reset + Ctrl-C in the boot window"
    assert conn.calls[:5] == ["open", "maint", "reset", "close", "ctrl-c"]


@pytest.mark.parametrize(
    ("info", "hello", "message"),
    [
        (
            FlashError("unexpected answer from the board: b'>>> '", where="/dev/ttyACM0"),
            None,
            "unexpected answer",
        ),
        (_info(hashlib=False), None, "has no hashlib.sha256; flash a current MicroPython"),
        (_info(mpy=99), None, "loads .mpy version 99"),
        (
            _info(),
            {"hash": "000000000000", "uid": "E66141040396312A"},
            "verification failed: after the reset the board reports firmware 000000000000",
        ),
        (_info(), "SAME", "another board answered after the reset (uid E6614103E7000009)"),
        (_info(), None, "the application did not say hello"),
    ],
)
def test_failures_name_the_cause_and_leave_the_board_running(
    builder: Builder, info: Any, hello: Any, message: str
) -> None:
    if hello == "SAME":
        hello = {"hash": builder(MPY).hash, "uid": "E6614103E7000009"}
    res, conn = _run(builder, probe=Probe("repl"), info=info, hello=hello)
    assert not res.ok
    assert res.result == "failed"
    assert message in (res.error or "")
    assert "reset" in conn.calls  # never left stopped at its REPL


def test_up_to_date_board_gets_nothing(builder: Builder) -> None:
    fw = builder(MPY)
    info = _info(live=dict(fw.hashes), manifest=fw.manifest().decode(), id='{"name":"press1"}')
    res, conn = _run(
        builder, probe=Probe("repl"), info=info, hello={"hash": fw.hash, "uid": "E66141040396312A"}
    )
    assert res.result == "up-to-date"
    assert conn.written == {}
    assert "exec" not in conn.calls  # not even pg_id.json: it says the same


def test_identity() -> None:
    opts = FlashOptions(name="press1", gateway="line1")
    assert json.loads(_identity(opts, {"id": None}) or "") == {"name": "press1", "gateway": "line1"}
    assert _identity(opts, {"id": '{"gateway":"line1","name":"press1"}'}) is None
    assert json.loads(_identity(opts, {"id": "not json"}) or "") == {"name": "press1", "gateway": "line1"}
    assert json.loads(_identity(opts, {"id": "[1, 2]"}) or "")["name"] == "press1"
    kept = json.loads(_identity(FlashOptions(name="p2"), {"id": '{"name":"p1","gateway":"g"}'}) or "")
    assert kept == {"name": "p2", "gateway": "g"}
    assert _identity(FlashOptions(), {"id": '{"name":"p1"}'}) is None


def test_board_names_from_info() -> None:
    assert _deploy.board_name(_info()) == "pico_w"


def test_old_repl_output_then_the_application_answers(builder: Builder) -> None:
    """What looked like a REPL was stale output: no raw REPL, but the application's hello."""
    fw = builder(MPY)
    conn = FakeConn(
        "/dev/ttyACM0", probe=Probe("repl"), info=_info(), hello={"hash": fw.hash, "uid": "E66141040396312A"}
    )
    conn.later_probes = [Probe("app", {"uid": "E66141040396312A"})]
    conn.raw_failures = 1
    res = flash_board("/dev/ttyACM0", FlashOptions(builder=builder), conn_factory=lambda _p: conn)  # type: ignore[arg-type,return-value]
    assert res.ok, res.error
    assert res.entered_by == "link maint"
    assert "maint" in conn.calls

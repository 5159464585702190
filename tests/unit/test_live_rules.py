"""The rules service's own parts (rules/_live.py, rules/_worker.py, rules/_config.py): the rules
section, finding and reading rule files, the compiler process (timeout, death), publish() topics,
and that a failing engine never breaks the pipeline.  Everything in a real gateway without a
broker (MQTT disabled), the real compiler process, real files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from picogate._gateway import Gateway
from picogate._model import PointInfo, PointType, Reading
from picogate.config import ConfigError
from picogate.gateway import GatewayConfig, parse_config
from picogate.rules import _worker
from picogate.rules._config import RulesSection
from picogate.rules._live import CompilerError, CompilerWorker, live_rules
from picogate.rules._worker import CompileJob, point_rows, read_rule_files, rule_files, run_job

GOOD = 'RULE hot\n  ON boiler.temp > 85\n  THEN alert("hot")\nEND\n'
POINTS = (
    PointInfo("boiler", "temp", PointType.FLOAT64),
    PointInfo("boiler", "burner", PointType.BOOL, writable=True),
)
ROWS = point_rows(POINTS)


def yaml_with_rules(rules: str) -> str:
    return f"gateway:\n  id: gw\nrules:\n{rules}"


# --------------------------------------------------------------------------- the rules section


def test_rules_section_defaults() -> None:
    cfg = parse_config(yaml_with_rules("  dir: /srv/rules\n"), filename="gateway.yaml")
    assert cfg.rules is not None
    assert cfg.rules.dir == Path("/srv/rules")
    assert cfg.rules.pattern == "*.rules"
    assert cfg.rules.debounce == 0.2
    assert cfg.rules.enabled


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  pattern: rules/*.rules\n", "rules.pattern: must be a file-name pattern such as '*.rules'"),
        ("  pattern: ''\n", "rules.pattern: must be a file-name pattern"),
        ("  debounce: 2s\n", "rules.debounce"),
        ("  debounce: often\n", "rules.debounce: must be a duration"),
        ("  direcory: /srv/rules\n", "rules.direcory"),
        ("  alert_qos: 2\n", "rules.alert_qos"),
        ("  max_pending_writes: 0\n", "rules.max_pending_writes"),
    ],
)
def test_rules_section_errors_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml_with_rules(body), filename="gateway.yaml")
    assert message in str(exc.value)
    assert "gateway.yaml:" in str(exc.value)


# --------------------------------------------------------------------------- files


def test_rule_files_leave_out_hidden_files_other_names_and_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(GOOD)
    (tmp_path / ".#a.rules").write_text("emacs lock")
    (tmp_path / ".a.rules.swp").write_text("vim swap")
    (tmp_path / ".hidden.rules").write_text("hidden")
    (tmp_path / "notes.txt").write_text("not a rule file")
    (tmp_path / "dir.rules").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.rules").write_text(GOOD)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.rules").write_text(GOOD)
    names = [p.relative_to(tmp_path).as_posix() for p in rule_files(tmp_path, "*.rules", recursive=False)]
    assert names == ["a.rules"]
    names = [p.relative_to(tmp_path).as_posix() for p in rule_files(tmp_path, "*.rules", recursive=True)]
    assert names == ["a.rules", "sub/b.rules"]


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "good.rules").write_text(GOOD)
    (tmp_path / "latin1.rules").write_bytes('ON boiler.temp > 85 THEN alert("chaudière")\n'.encode("latin-1"))
    files, errors = read_rule_files(tmp_path, "*.rules", recursive=False)
    assert list(files) == ["good.rules"]
    assert len(errors) == 1
    assert errors[0].file == "latin1.rules"
    assert (errors[0].line, errors[0].col) == (1, 39)
    assert errors[0].message == (
        "not UTF-8 text: byte 0xe8 ('è' in Latin-1 or Windows-1252) on line 1; save the file as UTF-8 "
        "(in Notepad: Save As, Encoding UTF-8)"
    )
    assert errors[0].format().splitlines()[1:] == [
        '  ON boiler.temp > 85 THEN alert("chaudière")',
        " " * 40 + "^",
    ]


def test_a_file_named_like_a_rule_file_but_not_read_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "good.rules").write_text(GOOD)
    (tmp_path / "door.rules.txt").write_text(GOOD)  # Windows added .txt
    (tmp_path / "pump.rule").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not a rule file")
    outcome = run_job(CompileJob(str(tmp_path), "*.rules", False, ROWS))
    assert outcome.ruleset is not None
    assert [(w.file, w.level, w.message) for w in outcome.ruleset.warnings] == [
        (
            "door.rules.txt",
            "warning",
            "this file is not read: rule files are named *.rules: rename it door.rules",
        ),
        ("pump.rule", "warning", "this file is not read: rule files are named *.rules: rename it pump.rules"),
    ]


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    outcome = run_job(CompileJob(str(tmp_path / "gone"), "*.rules", False, ROWS))
    assert outcome.ruleset is None
    assert "the rules directory does not exist" in outcome.errors[0].message


def test_unchanged_files_and_points_are_not_compiled_again(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(GOOD)
    first = run_job(CompileJob(str(tmp_path), "*.rules", False, ROWS))
    assert first.ruleset is not None
    again = run_job(CompileJob(str(tmp_path), "*.rules", False, ROWS, last_digest=first.digest))
    assert again.unchanged
    assert again.ruleset is None
    # other points (a point added at run time, say) are a change: the set is checked again
    more = (*POINTS, PointInfo("boiler", "pressure", PointType.FLOAT64))
    changed = run_job(CompileJob(str(tmp_path), "*.rules", False, point_rows(more), last_digest=first.digest))
    assert not changed.unchanged
    assert changed.ruleset is not None


def test_a_compiler_crash_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.rules").write_text(GOOD)

    def broken(*args: Any) -> Any:
        raise KeyError("oops")

    monkeypatch.setattr(_worker, "compile_rules", broken)
    outcome = run_job(CompileJob(str(tmp_path), "*.rules", False, ROWS))
    assert outcome.ruleset is None
    assert outcome.errors[0].file == "a.rules"
    assert outcome.errors[0].message == "internal compiler error: KeyError: 'oops'"


# --------------------------------------------------------------------------- the compiler process


async def test_compiler_process_compiles_and_survives_being_killed(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(GOOD)
    job = CompileJob(str(tmp_path), "*.rules", False, ROWS)
    worker = CompilerWorker()
    try:
        outcome = await worker.compile(job, timeout=30)
        assert outcome.ruleset is not None
        assert [r.id for r in outcome.ruleset.rules] == ["hot"]
        pid = worker.pid
        assert pid is not None
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)  # the OOM killer, say
        again = await worker.compile(job, timeout=30)
        assert again.ruleset is not None
        assert worker.pid not in (None, pid)
        assert worker.started == 2
    finally:
        await worker.close()
    assert worker.pid is None


async def test_compiler_process_that_takes_too_long_is_killed(tmp_path: Path) -> None:
    (tmp_path / "many.rules").write_text(
        "".join(f'ON boiler.temp > {i} THEN alert("{i}")\n' for i in range(3000))
    )
    worker = CompilerWorker()
    try:
        await worker.start()
        pid = worker.pid
        with pytest.raises(
            CompilerError, match=r"compiling took longer than 0\.001 s \(rules\.compile_timeout\)"
        ):
            await worker.compile(CompileJob(str(tmp_path), "*.rules", False, ROWS), timeout=0.001)
        assert worker.pid is None  # killed
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        (tmp_path / "many.rules").write_text(GOOD)
        outcome = await worker.compile(CompileJob(str(tmp_path), "*.rules", False, ROWS), timeout=30)
        assert outcome.ruleset is not None
    finally:
        await worker.close()


# --------------------------------------------------------------------------- in a gateway


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.rules").write_text(GOOD)
    cfg = GatewayConfig.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "outbox": {"synchronous": "normal"},
            "clock": {"check_sync": False},
        }
    )
    async with Gateway(cfg) as gw:
        for p in POINTS:
            gw.registry.add(p)
        await gw.reconfigure("rules", RulesSection(dir=rules_dir, watch=False))  # as attach does
        yield gw


class _Broker:
    """What the MQTT plug-in offers the rules (picogate._host.Messages), without a broker."""

    sink, root, qos, connection = "mqtt", "picogate/gw", 1, None

    def topic(self, name: str) -> str:
        return f"{self.root}/{name}"

    def publish_now(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return False


async def test_publish_refuses_wildcards_and_the_gateways_own_topics(gateway: Gateway) -> None:
    live = live_rules(gateway)
    assert live is not None
    live.host.provide_messages(_Broker())  # as with MQTT enabled
    assert live.refuse_topic("plant/boiler/avg") == ""
    assert "wildcards" in live.refuse_topic("plant/+/avg")
    assert "wildcards" in live.refuse_topic("plant/#")
    assert "non-empty" in live.refuse_topic("")
    assert "use LET for derived points" in live.refuse_topic("picogate/gw/cmd/boiler/burner/set")
    live.actions.publish("r", "picogate/gw/data/boiler/temp", 1, 0)
    assert live.stats.publish_refused == 1
    assert live.actions.queue == []


async def test_a_failing_engine_never_breaks_the_pipeline(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    live = live_rules(gateway)
    assert live is not None

    def broken(readings: Any) -> Any:
        raise RuntimeError("engine bug")

    live.engine.process = broken  # type: ignore[method-assign]
    await gateway.pipeline.emit([Reading("boiler", "temp", 90.0, 1)])
    assert gateway.pipeline.latest[("boiler", "temp")].value == 90.0  # the reading went on
    assert live.stats.engine_errors == 1
    assert "the rule engine failed in process" in caplog.text


async def test_readings_during_a_reload_meet_the_running_set_then_the_new_one(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The engine prepares the new set in a thread while readings go on through the running set;
    the swap falls between two readings."""
    live = live_rules(gateway)
    assert live is not None
    fired: list[str] = []
    real_alert = live.actions.alert

    def alert(rule: str, severity: str, message: str, state: str, ts: int) -> None:
        fired.append(f"{rule}:{state}:{message}")
        real_alert(rule, severity, message, state, ts)

    live.actions.alert = alert  # type: ignore[method-assign]
    real_prepare = live.engine.prepare
    preparing = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_prepare(ruleset: Any) -> Any:  # in the thread: long enough for a reading to come
        loop.call_soon_threadsafe(preparing.set)
        time.sleep(0.3)
        return real_prepare(ruleset)

    live.engine.prepare = slow_prepare  # type: ignore[method-assign]
    (tmp_path / "rules" / "a.rules").write_text(GOOD.replace('"hot"', '"hot v2"'))
    reload = asyncio.create_task(live.reload())
    async with asyncio.timeout(30):
        await preparing.wait()
    await gateway.pipeline.emit([Reading("boiler", "temp", 90.0, 1)])
    assert fired == ["hot:active:hot"]  # the running set saw it at once
    attempt = await reload
    assert attempt.ok
    assert fired == ["hot:active:hot", "hot:cleared:hot"]  # the changed rule's old version cleared
    await gateway.pipeline.emit([Reading("boiler", "temp", 91.0, 2)])
    assert fired[-1] == "hot:active:hot v2"  # the new version, fresh


async def test_a_point_added_at_run_time_triggers_a_reload(gateway: Gateway, tmp_path: Path) -> None:
    """A rule naming a point that is not there yet (a Pico board not connected yet) fails; when a
    source adds the point, the set is checked again without a save."""
    live = live_rules(gateway)
    assert live is not None
    (tmp_path / "rules" / "b.rules").write_text('ON boiler.pressure > 3 THEN alert("pressure")\n')
    attempt = await live.reload()
    assert not attempt.ok
    assert "pressure" in attempt.errors[0].message
    done: asyncio.Queue[Any] = asyncio.Queue()
    live.reload_done.append(done.put_nowait)
    service = asyncio.create_task(live.run())
    try:
        gateway.registry.add(PointInfo("boiler", "pressure", PointType.FLOAT64, origin="pico"))
        async with asyncio.timeout(20):
            attempt = await done.get()
        assert attempt.ok
        assert live.loaded is not None
        assert len(live.loaded.rules) == 2
    finally:
        live.stop()
        async with asyncio.timeout(10):
            await service


async def test_metrics_show_reloads_states_and_failures(gateway: Gateway, tmp_path: Path) -> None:
    live = live_rules(gateway)
    assert live is not None
    (tmp_path / "rules" / "a.rules").write_text('ON boiler.nope > 1 THEN alert("x")\n')
    await live.reload()
    text = gateway.parts.metrics.render().decode()
    assert 'picogate_rules_reloads_total{result="ok"} 1.0' in text  # the load at start
    assert 'picogate_rules_reloads_total{result="error"} 1.0' in text
    assert "picogate_rules_errors 1.0" in text
    assert 'picogate_rules{state="idle"} 1.0' in text  # the last good set's rule
    assert 'picogate_rules_failures_total{kind="engine"} 0.0' in text


async def test_the_demo_view_shows_rule_states_and_reload_errors(gateway: Gateway, tmp_path: Path) -> None:
    from picogate.demo._rules_view import rules_panel, rules_summary

    await gateway.pipeline.emit([Reading("boiler", "temp", 90.0, 1)])
    panel = rules_panel(gateway)
    assert panel is not None
    assert "1 rule from 1 file" in panel.plain
    assert "● hot active" in panel.plain
    assert "reload failed" not in panel.plain
    (tmp_path / "rules" / "a.rules").write_text('ON boiler.tmp > 1 THEN alert("x")\n')
    await live_rules(gateway).reload()  # type: ignore[union-attr]
    panel = rules_panel(gateway)
    assert panel is not None
    assert "reload failed, last good set kept: a.rules:1:4:" in panel.plain
    assert "● hot active" in panel.plain  # still running
    assert rules_summary(gateway) == " | rules 1 active, 1 errors in the last reload"


async def test_let_points_join_and_leave_the_registry_with_their_rules(
    gateway: Gateway, tmp_path: Path
) -> None:
    live = live_rules(gateway)
    assert live is not None
    (tmp_path / "rules" / "let.rules").write_text('LET boiler.temp_f = boiler.temp * 9 / 5 + 32 UNIT "°F"\n')
    assert (await live.reload()).ok
    info = gateway.registry.find("boiler", "temp_f")
    assert info is not None
    assert (info.unit, info.writable, info.origin) == ("°F", False, "rules")
    await gateway.pipeline.emit([Reading("boiler", "temp", 100.0, 1)])
    assert gateway.pipeline.latest[("boiler", "temp_f")].value == 212.0  # derived, published like a point
    (tmp_path / "rules" / "let.rules").unlink()
    assert (await live.reload()).ok
    assert gateway.registry.find("boiler", "temp_f") is None


async def test_a_let_may_not_take_a_point_a_source_added_meanwhile(gateway: Gateway, tmp_path: Path) -> None:
    live = live_rules(gateway)
    assert live is not None
    (tmp_path / "rules" / "let.rules").write_text("LET boiler.extra = boiler.temp * 2\n")
    job = live._job(last_digest="")
    gateway.registry.add(
        PointInfo("boiler", "extra", PointType.FLOAT64, origin="pico")
    )  # after the compile's view
    outcome = await live.worker.compile(job, timeout=30)
    await live._apply(outcome, started=0.0)
    assert not live.attempt.ok
    assert (
        "LET boiler.extra: a point of that name already exists (from pico)" in live.attempt.errors[0].message
    )
    assert live.attempt.errors[0].file == "let.rules"
    await live.worker.close()


async def test_rules_disabled_attach_nothing(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    cfg = GatewayConfig.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "rules": {"dir": str(rules_dir), "enabled": False},
        }
    )
    async with Gateway(cfg) as gw:
        assert live_rules(gw) is None
        assert gw.pipeline.processors == []


async def test_replaced_sets_are_freed_not_frozen_forever(gateway: Gateway, tmp_path: Path) -> None:
    """Each new set is frozen (kept out of the collector's scans) and each replaced one is freed by
    reference counting: many reloads do not grow the frozen objects, and the rules still work."""
    import gc

    live = live_rules(gateway)
    assert live is not None
    many = "".join(f'RULE r{i}\n  ON boiler.temp > {i} THEN alert("r{i}")\nEND\n' for i in range(200))
    counts = []
    for n in range(8):
        (tmp_path / "rules" / "a.rules").write_text(
            many + f"# version {n}\n" + GOOD.replace('"hot"', f'"hot {n}"')
        )
        assert (await live.reload()).ok
        counts.append(gc.get_freeze_count())
    assert live._freeze_sets  # the guard did not have to step in
    # flat (without the release each reload leaves ~600 objects frozen for good)
    assert counts[-1] - counts[2] <= 100, counts
    fired: list[str] = []
    live.actions.alert = lambda rule, severity, message, state, ts: fired.append(message)  # type: ignore[method-assign]
    await gateway.pipeline.emit([Reading("boiler", "temp", 90.0, 1)])
    assert "hot 7" in fired


async def test_sets_that_cannot_be_released_are_left_to_the_collector(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from picogate.rules import _live

    live = live_rules(gateway)
    assert live is not None
    monkeypatch.setattr(_live, "_release_namespaces", lambda old, new: 0)  # an engine built otherwise
    (tmp_path / "rules" / "a.rules").write_text(GOOD.replace('"hot"', '"hot 2"'))
    assert (await live.reload()).ok
    assert not live._freeze_sets
    assert gc.get_freeze_count() == 0  # nothing left frozen: the collector frees what is garbage
    gc.freeze()  # back to frozen, as after a gateway's start


async def test_corrupt_output_of_the_compiler_process_is_an_error_not_a_crash() -> None:
    class Proc:
        def __init__(self, data: bytes) -> None:
            self.stdout = asyncio.StreamReader()
            self.stdout.feed_data(data)
            self.stdout.feed_eof()

    with pytest.raises(CompilerError, match=r"output is corrupt \(a frame of 1099511627776 bytes\)"):
        await CompilerWorker._receive(Proc((1 << 40).to_bytes(8, "big")))  # type: ignore[arg-type]
    with pytest.raises(CompilerError, match="sent something unreadable"):
        await CompilerWorker._receive(Proc((5).to_bytes(8, "big") + b"hello"))  # type: ignore[arg-type]
    with pytest.raises(CompilerError, match="closed its output"):
        await CompilerWorker._receive(Proc((50).to_bytes(8, "big") + b"short"))  # type: ignore[arg-type]


async def test_a_write_refused_for_too_many_pending_leaves_its_audit_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    live = live_rules(gateway)
    assert live is not None
    live.config = live.config.model_copy(update={"max_pending_writes": 1})
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hang(rule: str, request: Any) -> None:
        await never

    live.actions._write = hang  # type: ignore[method-assign]  # a write that waits for its device
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        live.actions.set("r", "boiler", "burner", True)
        live.actions.set("r", "boiler", "burner", False)
        await asyncio.sleep(0)
    lines = [r for r in caplog.records if r.name == "picogate.audit"]
    assert [r.audit["code"] for r in lines] == ["busy"]  # type: ignore[attr-defined]
    assert live.stats.writes_refused == 1
    for task in live.actions.writes:
        task.cancel()


async def test_a_value_left_by_an_edited_rule_is_in_the_reload_message_and_the_status(
    gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = live_rules(gateway)
    assert live is not None
    (tmp_path / "rules" / "a.rules").write_text(
        "RULE night ON boiler.temp > 60 THEN set(boiler.burner, false) END\n"
    )
    assert (await live.reload()).ok
    await gateway.pipeline.emit([Reading("boiler", "temp", 70.0, 1)])
    assert live.status()["left_in_force"] == []
    (tmp_path / "rules" / "a.rules").write_text(
        "RULE night ON boiler.temp > 65 THEN set(boiler.burner, true) END\n"
    )
    with caplog.at_level(logging.WARNING, logger="picogate.rules"):
        assert (await live.reload()).ok
    assert (
        "rules: rule night (a.rules:1) was changed; the value it wrote stays in force: boiler.burner = false, "
        "until something writes boiler.burner again"
    ) in caplog.text
    [left] = live.status()["left_in_force"]
    assert {k: left[k] for k in ("point", "value", "rule", "file", "line", "rule_was")} == {
        "point": "boiler.burner",
        "value": False,
        "rule": "night",
        "file": "a.rules",
        "line": 1,
        "rule_was": "changed",
    }
    assert 1_000_000_000_000 < left["ts"] < 10_000_000_000_000  # milliseconds, as every ts on MQTT

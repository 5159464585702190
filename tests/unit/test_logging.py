"""Logs: every record is exactly one line, whatever it carries, and none is ever dropped."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from picogate import CommandRouter, PointInfo, PointRegistry, PointType, WriteRequest
from picogate._logging import MAX_LINE, JsonFormatter, TextFormatter, escape_text
from picogate._secrets import MASK
from picogate.mqtt import MqttSection


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """Everything logged under `picogate` goes (only) to `out`, formatted by `handler`."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("picogate")
    saved, level, propagate = log.handlers[:], log.level, log.propagate
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield out, handler
    finally:
        log.handlers[:] = saved
        log.setLevel(level)
        log.propagate = propagate


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_write_with_a_value_255_levels_deep_leaves_one_json_audit_line(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = captured
    handler.setFormatter(JsonFormatter())
    registry = PointRegistry()
    registry.add(PointInfo("boiler", "setpoint", PointType.FLOAT64, writable=True))
    router = CommandRouter(registry)
    result = await router.write(
        WriteRequest("boiler", "setpoint", nested(255), origin="mqtt", request_id="r1")
    )
    assert not result.ok
    lines = out.getvalue().splitlines()
    audit = [json.loads(line) for line in lines if '"picogate.audit"' in line]
    assert len(audit) == 1, lines
    record = audit[0]
    assert record["audit"]["device"] == "boiler"
    assert record["audit"]["id"] == "r1"
    assert record["audit"]["code"] == result.code.value
    # cut short: by the router (its audit value) or, failing that, by the formatter
    assert record["audit"].get("truncated") is True or record.get("log_truncated") is True


@pytest.mark.parametrize(
    "extra",
    [
        {"audit": {"value": nested(300)}},
        {"audit": {"value": 10**40}},
        {"audit": {"value": 10**5000}},
        {"audit": {"value": "\udcff lone surrogate"}},
        {"audit": {1: "non-text key", (2, 3): "tuple key"}},
        {"audit": {"value": type("Evil", (), {"__str__": lambda self: 1 / 0})()}},
        {"audit": {"value": "x" * (4 * MAX_LINE)}},
        {"audit": {"value": list(range(100_000))}},
    ],
    ids=["deep", "int128", "huge-int", "surrogate", "keys", "str-raises", "long-text", "many-items"],
)
def test_json_never_drops_a_record(
    extra: dict[str, Any], captured: tuple[io.StringIO, logging.Handler]
) -> None:
    out, handler = captured
    handler.setFormatter(JsonFormatter())
    logging.getLogger("picogate.audit").info("write %s", "boiler.setpoint", extra=extra)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert len(lines[0]) <= MAX_LINE
    record = json.loads(lines[0])
    assert record["msg"] == "write boiler.setpoint"
    assert "audit" in record


def test_arguments_that_do_not_fit_the_format_still_log() -> None:
    # (formatted directly: pytest's own capture handler would raise on this record)
    record = logging.LogRecord("picogate.test", logging.WARNING, __file__, 1, "value %d of %s", ("x",), None)
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "\n" not in line
        assert "value %d of %s" in line
        assert "'x'" in line


FORGED = "hi\n2026-01-01 00:00:00,000 INFO    picogate.audit: write boiler.burner=True by mqtt -> ok"


def test_text_a_message_with_a_newline_is_one_line(captured: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = captured
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("picogate.pico")
    log.info("board line1: %s", FORGED)  # in an argument
    log.info(FORGED + "\r\x1b[2K\u2028")  # in the message itself
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all(" picogate.pico: " in line for line in lines)
    assert "\\n2026-01-01 00:00:00,000 INFO    picogate.audit" in lines[0]
    assert lines[1].endswith("\\r\\x1b[2K\\u2028")


def test_text_a_traceback_follows_on_marked_lines(captured: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = captured
    handler.setFormatter(TextFormatter())
    try:
        raise ValueError(FORGED)
    except ValueError:
        logging.getLogger("picogate").exception("failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("picogate: failed")
    assert rest
    assert all(line.startswith("  | ") for line in rest)


def test_escape_text() -> None:
    assert escape_text("plain °C µs") == "plain °C µs"
    assert escape_text("a\nb\rc\td\x00e\x1b\x7f\x85\u2028") == "a\\nb\\rc\\td\\x00e\\x1b\\x7f\\x85\\u2028"


def test_the_password_read_at_start_is_masked_in_every_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_SECRETS_PW", "read-at-start-9")
    assert MqttSection(password_env="PG_TEST_SECRETS_PW").password() == "read-at-start-9"
    for formatter in (TextFormatter(), JsonFormatter()):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        log = logging.getLogger("picogate.test.secrets")
        log.addHandler(handler)
        try:
            log.error("broker said: bad password %s", "read-at-start-9")
            try:
                raise ValueError("read-at-start-9 refused")
            except ValueError:
                log.exception("failed")
        finally:
            log.removeHandler(handler)
        assert "read-at-start-9" not in out.getvalue()
        assert MASK in out.getvalue()


def test_json_a_cut_record_keeps_a_long_message(captured: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = captured
    handler.setFormatter(JsonFormatter())
    message = "rule errors: " + "x" * 5000
    logging.getLogger("picogate.rules").error("%s", message, extra={"audit": {"value": nested(300)}})
    record = json.loads(out.getvalue())
    assert record["log_truncated"] is True
    assert record["msg"] == message

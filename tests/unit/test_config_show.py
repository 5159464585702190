"""`picogate config show`: the effective configuration, defaults filled in, secrets masked, written
so that it loads back to the same configuration; `picogate config` alone prints its help; `-V`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from picogate import __version__
from picogate.cli import main
from picogate.config import effective, format_duration, parse_duration, show_yaml
from picogate.gateway import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _doc_examples() -> list[tuple[str, str]]:
    """Every ```yaml block of the docs that loads as a whole gateway.yaml."""
    out = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", text, re.DOTALL | re.MULTILINE):
            line = text.count("\n", 0, m.start()) + 1
            try:
                parse_config(m.group(1))
            except Exception:
                continue  # a fragment, or an example of a mistake
            out.append((f"{doc.name}:{line}", m.group(1)))
    out.append(("examples/gateway.yaml", (ROOT / "examples" / "gateway.yaml").read_text(encoding="utf-8")))
    return out


EXAMPLES = _doc_examples()


def test_there_are_examples_to_show() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_shown_configuration_loads_back_to_the_same(where: str, text: str) -> None:
    cfg = parse_config(text, filename=where)
    shown = show_yaml(cfg, source=where)
    if "********" in shown:  # a masked secret does not load back, by design
        assert yaml.safe_load(shown) == effective(cfg)
        return
    again = parse_config(shown, filename=f"show of {where}")
    assert effective(again) == effective(cfg)


def test_defaults_are_filled_in_and_durations_keep_their_unit() -> None:
    cfg = parse_config(
        "devices:\n  - {name: b, type: modbus_tcp, host: h, points: [{name: t, ref: 40001}]}\n"
    )
    data = yaml.safe_load(show_yaml(cfg))
    device = data["devices"][0]
    assert device["poll"] == "1s"
    assert device["timeout"] == "1s"
    assert device["port"] == 502
    assert device["unit_id"] == 1
    assert device["byte_order"] == "ABCD"
    assert device["points"][0] == {
        "name": "t",
        "ref": 40001,  # as written: a reference stands for its table and address
        "scale": 1.0,
        "offset": 0.0,
        "unit": "",
        "description": "",
        "deadband": 0.0,
        "writable": False,
    }
    assert data["outbox"]["commit_interval"] == "10ms"
    assert data["outbox"]["parked_retry"] == "10m"
    assert data["metrics"] == {"enabled": True, "host": "127.0.0.1", "port": 9108}
    assert "path" not in data["outbox"]  # not set: its default is <data_dir>/outbox.sqlite


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        0.001,
        0.02,
        0.2,
        0.25,
        1.0,
        1.5,
        30.0,
        60.0,
        90.0,
        600.0,
        3600.0,
        5400.0,
        86400.0,
        0.0005,
        123.456,
    ],
)
def test_format_duration_reads_back(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-12)
    assert "e" not in text


def test_format_duration_picks_the_unit_a_person_writes() -> None:
    assert [format_duration(s) for s in (0.2, 10.0, 300.0, 7200.0, 90.0)] == [
        "200ms",
        "10s",
        "5m",
        "2h",
        "90s",
    ]


def test_secrets_are_masked_and_moved_keys_shown_where_they_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(
        "mqtt:\n  host: broker\n  username: line3\n  password_env: HUNTER2_SECRET_VAR\n  command_ttl: 7s\n"
    )
    assert main(["config", "show", str(f)]) == 0
    out = capsys.readouterr().out
    assert "HUNTER2_SECRET_VAR" not in out
    data = yaml.safe_load(out)
    assert data["mqtt"]["password_env"] == "********"
    assert data["mqtt"]["username"] == "line3"
    assert "command_ttl" not in data["mqtt"]
    assert data["commands"]["deadline"]["mqtt"] == "7s"
    assert main(["config", "show", "--json", str(f)]) == 0
    out = capsys.readouterr().out
    assert "HUNTER2_SECRET_VAR" not in out
    assert orjson.loads(out)["mqtt"]["password_env"] == "********"


def test_config_show_of_a_bad_file_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("mqtt:\n  hots: broker\n")
    assert main(["config", "show", str(f)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "gateway.yaml:2:3: mqtt.hots: unknown key 'hots'" in captured.err
    assert "1 error" in captured.err


def test_config_show_of_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(ROOT / "examples" / "gateway.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# The effective configuration of ")
    assert effective(parse_config(out)) == effective(load_config(ROOT / "examples" / "gateway.yaml"))


def test_config_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "usage: picogate config" in out
    assert "check" in out
    assert "show" in out


def test_config_check_still_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("devices: []\n")
    assert main(["config", "check", str(f)]) == 0
    assert "OK (0 Modbus devices; 0 points)" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"picogate {__version__}"

"""docs/configuration.md is tested: its YAML examples load, and its key tables match the schema."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from picogate.config import ConfigError
from picogate.gateway import GatewayConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
TEXT = DOC.read_text(encoding="utf-8")


def yaml_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, body) of every ```yaml block."""
    blocks = []
    for m in re.finditer(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", text, re.DOTALL | re.MULTILINE):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


BLOCKS = yaml_blocks(TEXT)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("line", "block"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_yaml_example_loads(line: int, block: str) -> None:
    try:
        config = parse_config(block, filename=f"docs/configuration.md (block at line {line})")
    except ConfigError as exc:
        pytest.fail(str(exc))
    assert isinstance(config, GatewayConfig)


def test_complete_example_is_complete() -> None:
    """The last block is the annotated complete example: it sets every top-level section."""
    _, block = BLOCKS[-1]
    config = parse_config(block)
    for section in ("gateway", "mqtt", "outbox", "metrics", "devices"):
        assert re.search(rf"^{section}:", block, re.MULTILINE), section
    assert {d.type for d in config.devices} == {"modbus_tcp", "modbus_rtu"}


def _generator() -> ModuleType:
    path = ROOT / "tools" / "gen_config_doc.py"
    spec = importlib.util.spec_from_file_location("gen_config_doc", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_doc", module)
    spec.loader.exec_module(module)
    return module


def test_key_tables_are_up_to_date() -> None:
    assert _generator().render(TEXT) == TEXT, "run: python tools/gen_config_doc.py"


def test_every_key_is_documented() -> None:
    sections: dict[str, tuple[type[BaseModel], object]] = _generator().SECTIONS
    documented: set[tuple[str, str]] = set()
    for m in re.finditer(r"<!-- keys: ([\w.]+) -->\n(.*?)<!-- /keys -->", TEXT, re.DOTALL):
        for key in re.findall(r"^\| `(\w+)` \|", m.group(2), re.MULTILINE):
            documented.add((m.group(1), key))
    for name, (model, _) in sections.items():
        for key in model.model_fields:
            owners = {n for n, (other, _) in sections.items() if key in other.model_fields}
            assert any((owner, key) in documented for owner in owners), f"{name}.{key} is not documented"


def test_common_mistakes_quote_what_the_checker_prints() -> None:
    """Every message in "Common mistakes" is one of the data-driven cases' (tests/cases/config),
    and so exactly what `picogate config check` prints; the source lines shown are the cases' too."""
    section = TEXT.split("## Common mistakes", 1)[1].split("\n## ", 1)[0]
    cases = ROOT / "tests" / "cases" / "config"
    printed: set[str] = set()
    sources: set[str] = set()
    for case in cases.iterdir():
        for name in ("expected.txt", "warnings.txt"):
            if (case / name).exists():
                printed.update((case / name).read_text(encoding="utf-8").splitlines())
        if (case / "gateway.yaml").exists():
            sources.update((case / "gateway.yaml").read_text(encoding="utf-8").splitlines())
    quoted = [line for line in section.splitlines() if line.startswith("gateway.yaml:")]
    assert len(quoted) >= 6
    assert [line for line in quoted if line not in printed] == []
    shown = [m.group(1) for m in re.finditer(r"^ +\d+ \| (.*)$", section, re.MULTILINE)]
    assert [line for line in shown if line not in sources] == []

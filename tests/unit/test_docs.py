"""Examples in the docs are tested: YAML configs load, JSON payloads parse, tables match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _local import raspberry_pi
from picogate import ErrorCode
from picogate.gateway import parse_config
from picogate.local import _attach as local_attach

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(lang: str) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text(encoding="utf-8"))):
            if m.group(1) == lang:
                out.append((f"{doc.name}#{i}", m.group(2)))
    return out


@pytest.mark.parametrize(("where", "text"), blocks("yaml"), ids=[w for w, _ in blocks("yaml")])
def test_yaml_examples_are_valid_configs(where: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The `local:` examples (docs/local-io.md) are written for a Raspberry Pi's header: their pins
    # are checked against its pin map, not against the board the tests run on.
    monkeypatch.setattr(local_attach, "detect", raspberry_pi)
    parse_config(text, filename=where)


@pytest.mark.parametrize(("where", "text"), blocks("json"), ids=[w for w, _ in blocks("json")])
def test_json_examples_parse(where: str, text: str) -> None:
    json.loads(text)


def test_mqtt_doc_lists_every_result_code() -> None:
    text = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))
    assert {c.value for c in ErrorCode} <= documented


def test_architecture_doc_lists_every_result_code() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))
    assert {c.value for c in ErrorCode} <= documented


@pytest.mark.parametrize("doc", ["edgex.md", "coap.md", "sparkplug.md"])
def test_edgex_and_coap_docs_answer_every_write_code(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    missing = [c.value for c in ErrorCode if c is not ErrorCode.OK and f"`{c.value}`" not in text]
    assert not missing, f"{doc} does not say how these codes are answered: {missing}"


def test_no_doc_promises_a_timeout_code() -> None:
    """`timeout` was reported for writes that were applied; it is no longer a result code."""
    for doc in ("mqtt.md", "architecture.md", "edgex.md", "coap.md"):
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        assert "| `timeout` |" not in text, doc

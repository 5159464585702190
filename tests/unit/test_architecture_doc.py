"""docs/architecture.md matches the tree: its Layout names every package and module of the agent,
and the layers it draws are the import contract's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent" / "picogate"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _layout() -> str:
    section = DOC.split("## Layout", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def _entries(layout: str) -> dict[str, str]:
    """`  name/ text…` or `  name.py text…` entries under agent/picogate/, with their text."""
    entries: dict[str, str] = {}
    current = ""
    for line in layout.splitlines():
        m = re.match(r"^  (\S+)\s", line + " ")
        if m is not None and not line.startswith("   "):
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        elif not line.startswith(" "):
            current = ""
    return entries


def test_every_module_and_package_is_in_the_layout() -> None:
    entries = _entries(_layout())
    missing = []
    for path in sorted(AGENT.iterdir()):
        if path.name.startswith("__") or path.name in ("_data", "py.typed") or path.suffix == ".pyc":
            continue
        if path.is_dir():
            if not (path / "__init__.py").exists():
                continue
            text = entries.get(path.name + "/")
            if text is None:
                missing.append(path.name + "/")
                continue
            for module in sorted(path.glob("_*.py")):
                if module.name in ("__init__.py", "__main__.py"):
                    continue
                if not re.search(rf"(?<![\w]){re.escape(module.stem)}(?![\w])", text):
                    missing.append(f"{path.name}/{module.name}")
        elif path.suffix == ".py" and path.name not in entries and path.stem != "_paths":
            missing.append(path.name)
    assert missing == [], f"docs/architecture.md's Layout does not name: {missing}"


def test_the_layers_drawn_are_the_contracts() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    drawn = DOC.split("### Layers and the import contract", 1)[1].split("```")[1]
    for layer in layers:
        for module in re.split(r"\s*[|:]\s*", layer):
            name = module.removeprefix("picogate.")
            assert re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", drawn), (
                f"{module} is a layer of the contract but not drawn in docs/architecture.md"
            )

"""`make`'s first set-up shows what pip fetches, with sizes (tools/pip_progress.py), instead of a
silent line for minutes; everything pip said is kept for when it fails."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

PIP_OUTPUT = """\
Obtaining file:///work/picogate
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
Collecting pymodbus==3.16.1 (from picogate==0.1.0)
  Downloading pymodbus-3.16.1-py3-none-any.whl.metadata (15 kB)
  Downloading pymodbus-3.16.1-py3-none-any.whl (160 kB)
Collecting pydantic<3,>=2.6 (from picogate==0.1.0)
  Using cached pydantic-2.9.2-py3-none-any.whl (434 kB)
Collecting uvloop>=0.19 (from picogate==0.1.0)
  Downloading https://files.example/uvloop-0.21.0-cp311-cp311-manylinux_2_17_x86_64.whl (3.8 MB)
Requirement already satisfied: pip in ./.venv/lib/python3.11/site-packages
Building wheels for collected packages: picogate
  Building editable for picogate (pyproject.toml): started
  Building editable for picogate (pyproject.toml): finished with status 'done'
Installing collected packages: uvloop, pymodbus, pydantic, picogate
Successfully installed picogate-0.1.0 pydantic-2.9.2 pymodbus-3.16.1 uvloop-0.21.0
"""


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_progress", ROOT / "tools" / "pip_progress.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_package_fetched_is_shown_with_its_size() -> None:
    assert list(_module().steps(PIP_OUTPUT.splitlines(keepends=True))) == [
        "[1] downloading pymodbus-3.16.1-py3-none-any.whl (160 kB)",
        "[2] cached pydantic-2.9.2-py3-none-any.whl (434 kB)",
        "[3] downloading uvloop-0.21.0-cp311-cp311-manylinux_2_17_x86_64.whl (3.8 MB)",
        "building picogate",
        "installing 4 packages (4 MB fetched)",
        "installed",
    ]


def test_errors_are_shown_and_everything_is_logged(tmp_path: Path) -> None:
    log = tmp_path / "log"
    text = PIP_OUTPUT + "ERROR: Could not find a version that satisfies the requirement nope\n"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pip_progress.py"), str(log)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "bootstrap: [1] downloading pymodbus-3.16.1-py3-none-any.whl (160 kB)"
    assert lines[-1] == "bootstrap: ERROR: Could not find a version that satisfies the requirement nope"
    assert log.read_text() == text


def test_bootstrap_pipes_pip_through_it() -> None:
    script = (ROOT / "tools" / "bootstrap.sh").read_text()
    assert 'tools/pip_progress.py" "$LOG"' in script
    assert "first set-up: installing" in script

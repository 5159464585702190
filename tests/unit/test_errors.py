"""One error root: every exception the agent raises on purpose is a PicogateError (what and where),
and keeps the builtin base its callers catch."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from picogate._errors import PicogateError

AGENT = Path(__file__).resolve().parents[2] / "agent" / "picogate"

# Exceptions that never leave their module: control flow inside one function or process.
INTERNAL = {"_Refused", "_TooBig", "_Fail", "_Died", "Bad", "BadLet"}


def _exception_classes() -> list[tuple[str, str]]:
    found = []
    for path in sorted(AGENT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(AGENT.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name not in INTERNAL:
                names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if names & {"Exception", "ValueError", "RuntimeError", "KeyError", "ConnectionError"} or any(
                    n.endswith(("Error", "Unavailable", "Failure", "Down", "InUse", "Refused")) for n in names
                ):
                    found.append((module, node.name))
    return found


CLASSES = _exception_classes()


def test_the_scan_finds_the_errors() -> None:
    names = {name for _, name in CLASSES}
    assert {"ConfigError", "OutboxError", "WriteError", "CodecError", "MqttLost", "FlashError"} <= names


@pytest.mark.parametrize(("module", "name"), CLASSES)
def test_every_error_has_the_one_root(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PicogateError), f"{module}.{name}"


@pytest.mark.parametrize(
    ("module", "name", "builtin"),
    [
        ("picogate._outbox", "OutboxError", RuntimeError),
        ("picogate._registry", "UnknownPointError", KeyError),
        ("picogate.modbus._codec", "CodecError", ValueError),
        ("picogate.mqtt._client", "MqttLost", ConnectionError),
        ("picogate.pico._session", "LinkDown", ConnectionError),
        ("picogate.pico._link", "FrameError", ValueError),
        ("picogate.coap._payload", "PayloadError", ValueError),
    ],
)
def test_errors_keep_their_builtin_base(module: str, name: str, builtin: type[Exception]) -> None:
    assert issubclass(getattr(importlib.import_module(module), name), builtin)


def test_what_and_where() -> None:
    from picogate._outbox import OutboxError
    from picogate.flash import FlashError

    exc = OutboxError(Path("/data/outbox.sqlite"), "outbox /data/outbox.sqlite is closed")
    assert (exc.where, str(exc)) == ("/data/outbox.sqlite", "outbox /data/outbox.sqlite is closed")
    flash = FlashError("no answer", where="/dev/ttyACM0")
    assert (flash.where, flash.what, str(flash)) == ("/dev/ttyACM0", "no answer", "/dev/ttyACM0: no answer")
    plain = PicogateError("something failed")
    assert (plain.where, plain.what) == ("", "something failed")

"""Who may write over CoAP (`coap.writes`), as data; the safe defaults of the `coap:` section."""

from __future__ import annotations

import pytest

from picogate.coap._config import CoapSection
from picogate.coap._policy import is_loopback, write_refusal
from picogate.gateway import parse_config

LAN = "192.0.2.7"  # TEST-NET-1: never a real peer

# (policy, protected, oscore configured, peer) → None (goes on to the router) or the CoAP code
CASES = [
    ("protected", False, False, "127.0.0.1", None),
    ("protected", False, False, "::1", None),
    ("protected", False, False, "::ffff:127.0.0.1", None),
    ("protected", False, False, "127.8.9.10", None),
    ("protected", False, False, LAN, "4.01"),
    ("protected", False, False, f"::ffff:{LAN}", "4.01"),
    ("protected", False, False, "2001:db8::1", "4.01"),
    ("protected", False, False, None, "4.01"),
    ("protected", False, False, "not an address", "4.01"),
    ("protected", False, True, "127.0.0.1", "4.01"),  # with contexts, every write is protected
    ("protected", False, True, LAN, "4.01"),
    ("protected", True, True, LAN, None),
    ("open", False, False, LAN, None),
    ("open", False, False, "127.0.0.1", None),
    ("open", False, True, LAN, "4.01"),
    ("open", True, True, LAN, None),
    ("off", False, False, "127.0.0.1", "4.05"),
    ("off", True, True, LAN, "4.05"),
    ("off", False, False, LAN, "4.05"),
]


@pytest.mark.parametrize(("policy", "protected", "oscore", "peer", "expected"), CASES)
def test_write_policy(
    policy: str, protected: bool, oscore: bool, peer: str | None, expected: str | None
) -> None:
    refusal = write_refusal(policy, protected=protected, oscore_configured=oscore, peer=peer)  # type: ignore[arg-type]
    assert (refusal[0] if refusal else None) == expected
    if refusal is not None:
        assert refusal[1]  # a diagnostic that says why (and how to open it)


def test_the_refusal_says_how_to_open_it() -> None:
    refusal = write_refusal("protected", protected=False, oscore_configured=False, peer=LAN)
    assert refusal is not None
    assert LAN in refusal[1]
    assert "coap.oscore" in refusal[1]
    assert "coap.writes: open" in refusal[1]


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert is_loopback("fe80::1%lo") is False
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("")


def test_the_default_server_binds_loopback_and_protects_writes() -> None:
    assert CoapSection().bind == "127.0.0.1"
    assert CoapSection().writes == "protected"
    section = parse_config("coap:\n  nodes:\n    - {name: tank, points: {level: {}}}\n").coap
    assert section is not None
    assert section.bind == "127.0.0.1"
    assert section.writes == "protected"

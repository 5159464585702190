"""Who may write over CoAP (`coap.writes`), decided as data: no I/O, tested case by case.

| `coap.writes` | OSCORE contexts configured | an unprotected PUT from … | is |
|---------------|----------------------------|---------------------------|----|
| `protected` (default) | none | the gateway itself (loopback: 127.0.0.0/8, ::1) | accepted |
| `protected` | none | any other address | refused, 4.01 |
| `protected` or `open` | some | anywhere | refused, 4.01 (a PUT must be protected by one of them) |
| `open` | none | anywhere | accepted: anyone who reaches the port may write |
| `off` | any | anywhere, protected or not | refused, 4.05 |

A PUT protected by one of the configured contexts is accepted unless `writes` is `off`.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

__all__ = ["WritePolicy", "is_loopback", "write_refusal"]

WritePolicy = Literal["protected", "open", "off"]

_OPEN_HOW = (
    "configure coap.oscore for the node, or set coap.writes: open if everyone who can reach this "
    "port may move the plant"
)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1, also IPv4-mapped (`::ffff:127.0.0.1`) or with a zone."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def write_refusal(
    policy: WritePolicy, *, protected: bool, oscore_configured: bool, peer: str | None
) -> tuple[str, str] | None:
    """None when a PUT may go on to the command router; else (CoAP code, diagnostic).

    `protected`: the request came protected by one of the configured OSCORE contexts.
    `peer`: the sender's IP address as text (None if unknown)."""
    if policy == "off":
        return "4.05", "writes over CoAP are off (coap.writes: off)"
    if protected:
        return None
    if oscore_configured:
        return "4.01", "writes must be protected with OSCORE"
    if policy == "open" or is_loopback(peer):
        return None
    return "4.01", f"writes from {peer or 'the network'} must be protected with OSCORE: {_OPEN_HOW}"

"""Garbage collection around rule sets (docs/architecture.md, "Garbage collection"): a replaced
set's generated functions keep their namespaces alive in a reference cycle (namespace ↔
function); clearing the namespaces the running set does not share breaks it, so that reference
counting frees the old set at once instead of leaving it to a full collection.
"""

from __future__ import annotations

import sys
from typing import Any


def namespaces(prepared: object) -> dict[int, dict[str, Any]] | None:
    """The namespaces of a prepared set's generated functions (never a module's); None if the set
    does not look as expected."""
    namespaces: dict[int, dict[str, Any]] = {}
    handlers = getattr(prepared, "handlers", None)
    if not isinstance(handlers, dict):
        return None
    for by_point in handlers.values():
        if not isinstance(by_point, dict):
            return None
        for function in by_point.values():
            ns = getattr(function, "__globals__", None)
            if not isinstance(ns, dict):
                continue
            module = sys.modules.get(str(ns.get("__name__", "")))
            if module is not None and getattr(module, "__dict__", None) is ns:
                continue  # a module's: never
            namespaces[id(ns)] = ns
    return namespaces


def release_namespaces(old: object, new: object) -> int:
    """Clear the namespaces of the replaced set `old` that the running set `new` does not use;
    returns how many.  Nothing runs the old set's functions any more: the engine swapped."""
    released, running = namespaces(old), namespaces(new)
    if released is None or running is None:
        return 0
    count = 0
    for key, ns in released.items():
        if key not in running:
            ns.clear()
            count += 1
    return count

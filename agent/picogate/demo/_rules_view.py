"""The demo view's rules panel: the loaded set, each rule's state, and the errors of a failed reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from picogate._gateway import Gateway

_STATE_STYLE = {"active": "bold red", "idle": "green", "unknown": "yellow", "errored": "bold magenta"}


def rules_panel(gw: Gateway, *, max_errors: int = 2) -> Text | None:
    """`rules v… (N from F files): ● name state …` and, after a failed reload, its first errors;
    None when the gateway runs no rules."""
    from picogate.rules import live_rules

    live = live_rules(gw)
    if live is None:
        return None
    status = live.status()
    text = Text("  ")
    text.append("rules ", style="bold")
    rules: dict[str, dict[str, object]] = status["rules"]
    files = len(status["files"])
    loaded = f"version {status['version']}" if status["version"] else "none loaded"
    text.append(
        f"{loaded}: {len(rules)} rule{'s' * (len(rules) != 1)} from {files} file{'s' * (files != 1)}"
        f" in {live.directory}  ",
        style="dim",
    )
    for rule_id, rule in rules.items():
        state = str(rule.get("state", "unknown"))
        text.append("● ", style=_STATE_STYLE.get(state, ""))
        text.append(f"{rule_id} {state}")
        if rule.get("chattering"):  # fires and clears faster than a snapshot of its state shows
            text.append(f" chattering ({rule.get('fired')} fired)", style="bold magenta")
        text.append("  ")
    for error in status["errors"][:max_errors]:
        where = f"{error['file']}:{error['line']}:{error['col']}"
        text.append(f"\n  reload failed, last good set kept: {where}: {error['message']}", style="bold red")
    return text


def rules_summary(gw: Gateway) -> str:
    """For the one-line summary: `rules 3 active, 4 idle` (empty without rules)."""
    from picogate.rules import live_rules

    live = live_rules(gw)
    if live is None:
        return ""
    status = live.status()
    counts = ", ".join(f"{n} {state}" for state, n in status["counts"].items() if n)
    chattering = sum(1 for r in status["rules"].values() if r.get("chattering"))
    if chattering:
        counts += f" ({chattering} chattering)"
    errors = f", {len(status['errors'])} errors in the last reload" if status["errors"] else ""
    return f" | rules {counts or 'none'}{errors}"

"""Many boards at once: bounded parallel flashing, a progress bar per board, a factory log."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from picogate.flash._errors import FlashError
from picogate.flash._flash import FlashOptions, FlashResult, flash_board
from picogate.flash._select import Target, enter_bootloader, install_micropython

__all__ = ["FactoryRun", "run_many"]


@dataclass
class FactoryRun:
    targets: Sequence[Target]
    opts: FlashOptions
    parallel: int = 4
    log_path: Path | None = None
    config_name: str | None = None
    micropython: Path | None = None
    names: Callable[[Target, int], str | None] | None = None
    reinstall_micropython: bool = False


def _log_record(res: FlashResult, run: FactoryRun) -> dict[str, Any]:
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "uid": res.uid,
        "port": res.port,
        "board": res.board,
        "micropython": res.micropython,
        "firmware": res.version,
        "hash": res.hash,
        "name": res.name,
        "config": run.config_name,
        "result": res.result,
        "ok": res.ok,
        "error": res.error,
        "uploaded": len(res.uploaded),
        "bytes": res.uploaded_bytes,
        "duration": res.duration,
    }


def run_many(run: FactoryRun, *, console: Console | None = None) -> list[FlashResult]:
    """Flash every target, `run.parallel` at a time; a failure does not stop the others."""
    console = console or Console(stderr=True)
    lock = threading.Lock()
    results: list[FlashResult] = []
    columns = (
        TextColumn("{task.fields[label]:<24}"),
        BarColumn(bar_width=24),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console, transient=False, refresh_per_second=8) as bars:

        def one(idx_target: tuple[int, Target]) -> FlashResult:
            idx, target = idx_target
            task = bars.add_task("waiting", total=None, label=target.label)

            def prog(stage: str, done: int, total: int) -> None:
                if total:
                    bars.update(task, description=stage, completed=done, total=total)
                else:
                    bars.update(task, description=stage)

            opts = run.opts
            if run.names is not None:
                opts = replace(opts, name=run.names(target, idx + 1))
            port = target.port
            if port is not None and run.reinstall_micropython and run.micropython is not None:
                try:
                    prog("entering the UF2 bootloader", 0, 0)
                    drive = enter_bootloader(port, target.serial, run.micropython)
                except FlashError as e:
                    res = FlashResult(port=port, uid=target.serial, name=opts.name, error=str(e))
                    return _finish(res, run, lock, results, bars, task)
                target = replace(target, port=None, drive=drive)
                port = None
            if port is None:
                res = FlashResult(
                    port=target.drive.device if target.drive else "?", uid=target.serial, name=opts.name
                )
                try:
                    if run.micropython is None or target.drive is None:
                        raise FlashError(
                            "in the UF2 bootloader: pass --micropython FILE.uf2 to install MicroPython first",
                            where=res.port,
                        )
                    prog("installing MicroPython", 0, 0)
                    port = install_micropython(target.drive, run.micropython, log=lambda m: prog(m, 0, 0))
                except FlashError as e:
                    res.error = str(e)
                    prog("failed", 1, 1)
                    return _finish(res, run, lock, results, bars, task)
            res = flash_board(port, opts, progress=prog)
            res.uid = res.uid or target.serial or None
            return _finish(res, run, lock, results, bars, task)

        with ThreadPoolExecutor(max_workers=max(1, run.parallel)) as ex:
            list(ex.map(one, enumerate(run.targets)))
    return results


def _finish(
    res: FlashResult,
    run: FactoryRun,
    lock: threading.Lock,
    results: list[FlashResult],
    bars: Progress,
    task: Any,
) -> FlashResult:
    bars.update(
        task,
        description=("[green]" if res.ok else "[red]") + res.result + (f": {res.error}" if res.error else ""),
    )
    with lock:
        results.append(res)
        if run.log_path is not None:
            run.log_path.parent.mkdir(parents=True, exist_ok=True)
            with run.log_path.open("a") as f:
                f.write(json.dumps(_log_record(res, run), separators=(",", ":")) + "\n")
    return res

"""The rules' compiler process: one long-lived `python -c "from picogate.rules._worker import main;
main()"` (a fresh interpreter, at nice 5), fed a `CompileJob` and answering a `CompileOutcome`
over a pipe, so that parsing 1,000 rules never holds the gateway's event loop.  Replaced if it
dies, killed when a compilation takes longer than `rules.compile_timeout` (rules/_live.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from picogate._errors import PicogateError
from picogate.rules._worker import HEADER, MAX_FRAME, CompileJob, CompileOutcome, frame

log = logging.getLogger("picogate.rules")

_WORKER_START_TIMEOUT_S = 30.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The directory holding the picogate package, on the compiler process's PYTHONPATH."""


class CompilerError(PicogateError):
    """The compiler process could not deliver an outcome (it died, or took longer than allowed)."""


class _Died(Exception):
    pass


class CompilerWorker:
    """One long-lived compiler process (`picogate.rules._worker.main`), so that the event loop
    never runs the parser.  Started again if it dies; killed when a compilation takes longer than
    the timeout.  Its stderr is the gateway's."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.started = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        """Start the process now and wait until it is ready (so that the first reload is quick)."""
        async with self._lock:
            await self._ensure()

    async def _ensure(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        await self._kill()
        package_root = _PACKAGE_ROOT
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from picogate.rules._worker import main; main()",  # not -m: pickles name the real module
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        self._proc = proc
        self.started += 1
        try:
            async with asyncio.timeout(_WORKER_START_TIMEOUT_S):
                hello = await self._receive(proc)
        except TimeoutError:
            await self._kill()
            raise CompilerError(
                f"the compiler process did not start within {_WORKER_START_TIMEOUT_S:g} s"
            ) from None
        except CompilerError:
            code = await self._kill()
            raise CompilerError(f"the compiler process failed to start (exit code {code})") from None
        if hello != "ready":
            await self._kill()
            raise CompilerError(f"the compiler process said {hello!r} instead of ready")
        return proc

    @staticmethod
    async def _receive(proc: asyncio.subprocess.Process) -> Any:
        assert proc.stdout is not None
        try:
            header = await proc.stdout.readexactly(HEADER)
            size = int.from_bytes(header, "big")
            if size > MAX_FRAME:
                raise CompilerError(f"the compiler process's output is corrupt (a frame of {size} bytes)")
            data = await proc.stdout.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise CompilerError("the compiler process closed its output") from exc
        try:
            if len(data) > 65536:  # in a thread: the loop runs between the Python-level parts of it
                return await asyncio.to_thread(pickle.loads, data)
            return pickle.loads(data)
        except Exception as exc:  # a stream out of step, or a stray write to its stdout
            raise CompilerError(f"the compiler process sent something unreadable ({exc!r})") from exc

    async def compile(self, job: CompileJob, *, timeout: float) -> CompileOutcome:
        """The outcome of `job`.  A process that died since the last job (killed by the OOM killer,
        say) is replaced and the job tried once more; one that dies on this job twice is reported,
        as is one that takes longer than `timeout` (it is killed)."""
        async with self._lock:
            try:
                return await self._compile_once(job, timeout)
            except _Died as exc:
                log.warning("rules: %s; starting it again", exc)
            try:
                return await self._compile_once(job, timeout)
            except _Died as exc:
                raise CompilerError(f"{exc}, twice, on these rule files") from None

    async def _compile_once(self, job: CompileJob, timeout: float) -> CompileOutcome:
        proc = await self._ensure()
        assert proc.stdin is not None
        try:
            proc.stdin.write(frame(job))
            async with asyncio.timeout(timeout):
                await proc.stdin.drain()
                outcome = await self._receive(proc)
        except TimeoutError:
            await self._kill()
            raise CompilerError(f"compiling took longer than {timeout:g} s (rules.compile_timeout)") from None
        except (CompilerError, ConnectionError) as exc:
            code = await self._kill()
            raise _Died(f"the compiler process died (exit code {code})") from exc
        if not isinstance(outcome, CompileOutcome):
            await self._kill()
            raise CompilerError(f"the compiler process sent {type(outcome).__name__}")
        return outcome

    async def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            async with asyncio.timeout(5):
                return await proc.wait()
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Ask the process to end (closing its input), kill it if it does not."""
        proc = self._proc
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await proc.wait()
        await self._kill()

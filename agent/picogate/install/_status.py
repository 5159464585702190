"""`picogate service status`: is the gateway installed, enabled and running, and healthy?"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from picogate.install._apply import groups_of, under
from picogate.install._plan import UDEV_PATH, UNIT_PATH


@dataclass(slots=True)
class Status:
    """One `name: text` line per thing looked at; `running` and `healthy` decide the exit status."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    running: bool = False
    healthy: bool = False

    def add(self, name: str, text: str) -> None:
        self.lines.append((name, text))


def unit_settings(text: str) -> tuple[str | None, str | None]:
    """(configuration file, service user) that a unit's ExecStart and User= name."""
    config = user = None
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            try:
                argv = shlex.split(line.removeprefix("ExecStart="))
            except ValueError:
                continue
            for flag in ("-c", "--config"):
                if flag in argv[:-1]:
                    config = argv[argv.index(flag) + 1]
        elif line.startswith("User="):
            user = line.removeprefix("User=").strip()
    return config, user


def _systemctl(*args: str) -> str:
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=30, check=False)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else ""
    )


def collect(
    root: Path,
    *,
    load_config: Callable[[Path], Any],
    config: Path | None = None,
    systemd: bool | None = None,
    fetch: Callable[[str], tuple[int, str]] | None = None,
) -> Status:
    """Look at the installation under `root`; `systemd` None: ask systemctl where systemd runs."""
    st = Status()
    unit = under(root, UNIT_PATH)
    unit_config = user = None
    if unit.is_file():
        unit_config, user = unit_settings(unit.read_text(encoding="utf-8"))
        st.add("unit", str(unit))
    else:
        st.add("unit", f"{unit}: not installed (sudo picogate service install)")
    if systemd is None:
        systemd = (
            root == Path("/") and Path("/run/systemd/system").is_dir() and bool(shutil.which("systemctl"))
        )
    if systemd:
        enabled = _systemctl("is-enabled", "picogate.service") or "unknown"
        active = _systemctl("is-active", "picogate.service") or "unknown"
        st.running = active == "active"
        st.add("enabled", enabled)
        st.add("active", active + ("" if st.running else "  (journalctl -u picogate -n 50 says why)"))
    else:
        st.add("systemd", "not running here: enabled and active are not known")
    udev = under(root, UDEV_PATH)
    st.add("udev rules", str(udev) if udev.is_file() else f"{udev}: not installed")
    if user is not None:
        groups = groups_of(user) if root == Path("/") else None
        if root != Path("/"):
            st.add("user", user)
        elif groups is None:
            st.add("user", f"{user}: no such user")
        else:
            missing = "" if "dialout" in groups else "  (not in dialout: serial ports will be refused)"
            st.add("user", f"{user}, in {', '.join(sorted(groups))}{missing}")
    path = config or (Path(unit_config) if unit_config else None)
    if path is None:
        st.add("config", "unknown (no unit; give --config)")
        return st
    # The unit's path is inside the installation; a path given on the command line is as given.
    from_unit = config is None and root != Path("/") and path.is_absolute()
    shown = under(root, PurePosixPath(path)) if from_unit else path
    try:
        cfg = load_config(shown)
    except Exception as exc:  # ConfigError, or a file that cannot be read
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.add("config", f"{shown}: does not load: {first} (picogate config check {shown})")
        return st
    st.add("config", f"{shown}: OK")
    metrics = cfg.metrics
    if not metrics.enabled:
        st.add("health", "metrics.enabled is false: no /healthz to ask")
        return st
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "", "::") else metrics.host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{metrics.port}/healthz"
    code, body = (fetch or _fetch)(url)
    if code == 0:
        st.add("health", f"{url}: no answer ({body})")
        return st
    health = re.search(r'"status"\s*:\s*"(\w+)"', body)
    state = health.group(1) if health else f"HTTP {code}"
    st.healthy = code == 200 and state == "ok"
    st.add("health", f"{url}: {state}")
    return st


def _fetch(url: str) -> tuple[int, str]:
    try:
        # No proxy: the gateway's address is its own (an http_proxy in the environment would
        # send a loopback request elsewhere).
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=3) as reply:
            return int(reply.status), reply.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return 0, str(reason)

"""The wheel: one top-level package, firmware/boards/examples inside, the `picogate` command."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_layout_and_install(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("picogate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"picogate"}
    assert "picogate/_data/boards/README.md" in names
    assert "picogate/_data/firmware/README.md" in names
    assert "picogate/_data/examples/gateway.yaml" in names
    assert not any(n.startswith(("picogate/tests", "agent/", "tools/")) for n in names)

    # Installed without the source tree next to it, the data folders are found inside the package.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True)  # the dependencies come from the test venv
    py = env_dir / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        timeout=120,
    )
    out = subprocess.run(
        [
            py,
            "-c",
            "import picogate, picogate._paths as p; print(picogate.__file__); print(p.data_dir('firmware'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split()
    assert str(env_dir) in out[0]
    assert out[1].endswith("picogate/_data/firmware")
    cli = subprocess.run(
        [env_dir / "bin" / "picogate", "--version"], capture_output=True, text=True, check=True
    )
    assert cli.stdout.strip() == "picogate 0.1.0"

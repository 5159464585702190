"""The wheel: one top-level package, firmware/boards/examples inside, the `picogate` command; a
wheel installed into a fresh venv, away from the source tree, is the whole install: the commands
an operator starts with, and the demo's pieces that read data files, work from it."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
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
    assert "picogate/_data/examples/default-gateway.yaml" in names
    assert "picogate/_data/service/picogate.service" in names
    assert "picogate/_data/service/99-picogate.rules" in names
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


def _fresh_install(tmp_path: Path) -> tuple[Path, Path]:
    """The wheel built and installed into a fresh venv; returns (venv, the installed package)."""
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
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    # The dependencies come from the test venv (no network here), as a plain path: its .pth files
    # (the editable install of this checkout) are not read, so only the wheel's picogate is seen.
    fresh_site = Path(
        subprocess.run(
            [env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (fresh_site / "test-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    return env_dir, fresh_site / "picogate"


def test_the_wheel_is_the_whole_install(tmp_path: Path) -> None:
    env_dir, pkg = _fresh_install(tmp_path)
    work = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    work.mkdir()
    pg = str(env_dir / "bin" / "picogate")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([pg, *args], capture_output=True, text=True, cwd=work, timeout=120, check=False)
        if check:
            assert done.returncode == 0, f"picogate {' '.join(args)}: {done.stderr}"
        return done

    where = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import picogate; print(picogate.__file__)"],
        capture_output=True, text=True, check=True, cwd=work,
    ).stdout  # fmt: skip
    assert where.startswith(str(pkg))

    assert run("--version").stdout.strip() == "picogate 0.1.0"
    assert run("-V").stdout.strip() == "picogate 0.1.0"

    examples = pkg / "_data" / "examples"
    example = str(examples / "gateway.yaml")
    assert (
        "OK (3 Modbus devices, 1 Pico board, 1 CoAP device; 21 points)"
        in run("config", "check", example).stdout
    )
    assert "name: line1_io" in run("config", "show", example).stdout
    assert "OK" in run("config", "check", str(examples / "default-gateway.yaml")).stdout
    # The demo's rules, checked against the demo's points.
    run("rules", "check", "--config", example, str(examples / "rules"))

    # The service's files come from the package; the unit runs this installation's picogate.
    out = run("service", "install", "--dry-run", "--root", str(tmp_path / "root")).stdout
    assert f"    ExecStart={pg} --log-format json run -c /etc/picogate/gateway.yaml" in out
    assert '    SUBSYSTEM=="tty", ATTRS{idVendor}=="2e8a"' in out
    assert "    devices: []" in out

    assert "complete -F _picogate_complete picogate" in run("completion", "bash").stdout

    # The demo's pieces that read data files: its example and rules, the simulated Pico's firmware,
    # the board definitions, the firmware build for real boards.
    script = (
        "from pathlib import Path\n"
        "from picogate.demo._run import demo_rules, example_config_path\n"
        "from picogate.simboard._board import install_firmware\n"
        "from picogate.pico._boards import board\n"
        "from picogate.flash import build_firmware\n"
        "print(example_config_path())\n"
        "print(sorted(p.name for p in demo_rules(Path('demo')).iterdir()))\n"
        "print((install_firmware('board') / 'main.py').is_file())\n"
        "print(board('pico').name)\n"
        "print(len(build_firmware(6, cache=Path('cache')).files) > 3)\n"
    )
    out = subprocess.run(
        [env_dir / "bin" / "python", "-c", script],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(examples / "gateway.yaml")
    assert lines[1] == "['boiler.rules', 'tank.rules']"
    assert lines[2:] == ["True", "pico", "True"]

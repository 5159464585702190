"""`picogate service install|status` and `picogate completion`: the install plan as data, the plan
carried out into a directory (as when an image is built), the status of that installation, and the
completion script run by bash itself."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from picogate._paths import data_dir, service_file
from picogate.cli import _parser, main
from picogate.install._completion import completion_script
from picogate.install._plan import plan_install, unit_text
from picogate.install._status import collect, unit_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = service_file("picogate.service").read_text(encoding="utf-8")
UDEV = service_file("99-picogate.rules").read_text(encoding="utf-8")
DEFAULT = (data_dir("examples") / "default-gateway.yaml").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _plan(**overrides: object):  # type: ignore[no-untyped-def]
    kwargs: dict[str, object] = {
        "executable": "/opt/pg/bin/picogate",
        "user": "picogate",
        "config": PurePosixPath("/etc/picogate/gateway.yaml"),
        "unit_template": TEMPLATE,
        "udev_rules": UDEV,
        "default_config": DEFAULT,
        "groups_present": {"dialout", "gpio", "i2c", "plugdev"},
        "user_groups": None,
        "hostname": "line-3.plant.local",
    }
    kwargs.update(overrides)
    return plan_install(**kwargs)  # type: ignore[arg-type]


def test_plan_new_user_in_every_device_group_present() -> None:
    plan = _plan()
    assert plan.groups == ("dialout", "gpio", "i2c")
    useradd = plan.commands[0].argv
    assert useradd[0] == "useradd"
    assert useradd[useradd.index("--groups") + 1] == "dialout,gpio,i2c"
    assert useradd[-1] == "picogate"
    assert [c.argv[:2] for c in plan.commands[1:]] == [
        ("udevadm", "control"),
        ("udevadm", "trigger"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable"),
    ]
    unit = next(f for f in plan.files if f.path.name == "picogate.service")
    assert "SupplementaryGroups=dialout gpio i2c" in unit.content
    assert (
        "ExecStart=/opt/pg/bin/picogate --log-format json run -c /etc/picogate/gateway.yaml" in unit.content
    )
    assert "ExecStartPre=/opt/pg/bin/picogate config check /etc/picogate/gateway.yaml" in unit.content
    config = next(f for f in plan.files if f.path.name == "gateway.yaml")
    assert config.replace is False
    assert "  id: line-3 " in config.content


def test_plan_without_gpio_and_i2c_groups() -> None:
    plan = _plan(groups_present={"dialout"})
    assert plan.groups == ("dialout",)
    plan = _plan(groups_present=set())  # dialout always: useradd says so if the system has none
    assert plan.groups == ("dialout",)


def test_plan_existing_user_joins_only_the_missing_groups() -> None:
    plan = _plan(user_groups={"picogate", "dialout"})
    assert plan.commands[0].argv == ("usermod", "-aG", "gpio,i2c", "picogate")
    plan = _plan(user_groups={"picogate", "dialout", "gpio", "i2c"})
    assert plan.commands[0].argv[0] == "udevadm"  # nothing to change for the user


def test_plan_start_and_other_user_and_config() -> None:
    plan = _plan(start=True, user="gw", config=PurePosixPath("/srv/gw/gw.yaml"))
    assert plan.commands[-1].argv == ("systemctl", "enable", "--now", "picogate.service")
    unit = plan.files[0].content
    assert "User=gw\nGroup=gw\n" in unit
    assert "run -c /srv/gw/gw.yaml" in unit
    assert [d.path for d in plan.directories] == [PurePosixPath("/srv/gw"), PurePosixPath("/srv/gw/rules")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"user": "Pico Gate"}, "a user name is lower-case letters"),
        ({"config": PurePosixPath("gateway.yaml")}, "give an absolute path"),
    ],
)
def test_plan_refuses(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _plan(**overrides)


@pytest.mark.parametrize(
    ("hostname", "gw_id"), [("raspberrypi", "raspberrypi"), ("42", "gateway"), ("", "gateway")]
)
def test_the_gateway_id_comes_from_the_hostname(hostname: str, gw_id: str) -> None:
    config = next(f for f in _plan(hostname=hostname).files if f.path.name == "gateway.yaml")
    assert f"  id: {gw_id} " in config.content


def test_unit_text_keeps_the_rest_of_the_template() -> None:
    text = unit_text(TEMPLATE, executable="/x/picogate", user="u", config="/c.yaml", groups=["dialout"])
    assert text.count("\n") == TEMPLATE.count("\n")
    assert "ProtectSystem=strict" in text
    assert unit_settings(text) == ("/c.yaml", "u")


def test_the_default_configuration_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(ROOT / "examples" / "default-gateway.yaml")]) == 0
    assert "OK (0 Modbus devices; 0 points)" in capsys.readouterr().out


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "install", "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert f"write {tmp_path}/etc/systemd/system/picogate.service (mode 644):" in out
    assert f"write {tmp_path}/etc/udev/rules.d/99-picogate.rules (mode 644):" in out
    assert f"write {tmp_path}/etc/picogate/gateway.yaml (mode 644):" in out
    assert "    ExecStart=" in out  # every file's content
    assert "run: systemctl enable picogate.service" in out


def test_install_into_a_root_then_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "install", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    unit = tmp_path / "etc/systemd/system/picogate.service"
    config = tmp_path / "etc/picogate/gateway.yaml"
    assert unit.is_file()
    assert (tmp_path / "etc/udev/rules.d/99-picogate.rules").read_text() == UDEV
    assert (tmp_path / "etc/picogate/rules").is_dir()
    assert "not run (installing into" in out
    assert "  systemctl enable picogate.service" in out

    # Again, with an edited configuration: the configuration is kept, the rest unchanged.
    config.write_text(config.read_text() + "# edited\n")
    assert main(["service", "install", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"kept {config} (it exists; never overwritten)" in out
    assert f"unchanged {unit}" in out
    assert config.read_text().endswith("# edited\n")

    assert main(["service", "status", "--root", str(tmp_path)]) == 3  # not running
    out = capsys.readouterr().out
    assert f"unit:       {unit}" in out
    assert f"config:     {config}: OK" in out
    assert "health:     http://127.0.0.1:9108/healthz: no answer" in out or "health:" in out


def test_status_of_a_bad_configuration_and_no_installation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "status", "--root", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert "picogate.service: not installed (sudo picogate service install)" in out
    assert "config:     unknown (no unit; give --config)" in out
    bad = tmp_path / "gateway.yaml"
    bad.write_text("mqtt:\n  hots: x\n")
    from picogate.gateway import load_config

    st = collect(tmp_path, load_config=load_config, config=bad, systemd=False)
    text = dict(st.lines)["config"]
    assert "does not load" in text
    assert "unknown key 'hots'" in text
    assert f"picogate config check {bad}" in text


def test_status_health_from_the_gateway(tmp_path: Path) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("metrics: {host: 127.0.0.1, port: 19108}\n")
    from picogate.gateway import load_config

    asked: list[str] = []

    def fetch(url: str) -> tuple[int, str]:
        asked.append(url)
        return 200, '{"status": "ok", "sinks": {}}'

    st = collect(tmp_path, load_config=load_config, config=f, systemd=False, fetch=fetch)
    assert asked == ["http://127.0.0.1:19108/healthz"]
    assert st.healthy
    assert dict(st.lines)["health"] == "http://127.0.0.1:19108/healthz: ok"


def test_service_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service"]) == 0
    out = capsys.readouterr().out
    assert "install" in out
    assert "status" in out


# --------------------------------------------------------------------------- completion


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `words` (the last one being completed)."""
    bash = shutil.which("bash")
    assert bash is not None
    program = (
        script
        + '\nCOMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()\n'
        + '_picogate_complete; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        [bash, "--norc", "-c", program, "bash", *words],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [w for w in done.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    return completion_script(_parser(), "bash")


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("picogate", "con"), ["config"]),
        (("picogate", "config", ""), ["-h", "--help", "check", "show"]),
        (("picogate", "config", "show", "--"), ["--help", "--json"]),
        (("picogate", "--log-level", ""), ["debug", "info", "warning", "error"]),
        (("picogate", "--log-level", "debug", "ser"), ["service"]),
        (("picogate", "service", "install", "--dr"), ["--dry-run"]),
        (("picogate", "poll", "--once", "-d", "boiler", "--j"), ["--json"]),
        (("picogate", "completion", ""), ["-h", "--help", "bash", "zsh"]),
        (("picogate", "scan", "--framing", ""), ["socket", "rtu"]),
    ],
)
def test_bash_completes(bash_script: str, words: tuple[str, ...], expected: list[str]) -> None:
    assert _complete(bash_script, *words) == expected


def test_bash_completes_files_where_a_file_goes(bash_script: str, tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("")
    prefix = str(tmp_path / "gate")
    assert _complete(bash_script, "picogate", "config", "check", prefix) == [str(tmp_path / "gateway.yaml")]
    assert _complete(bash_script, "picogate", "run", "-c", prefix) == [str(tmp_path / "gateway.yaml")]


def test_every_command_is_completed(bash_script: str) -> None:
    offered = set(_complete(bash_script, "picogate", ""))
    for name in (
        "run",
        "config",
        "demo",
        "poll",
        "scan",
        "rules",
        "boards",
        "flash",
        "edgex",
        "service",
        "completion",
    ):
        assert name in offered


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads() -> None:
    script = completion_script(_parser(), "zsh")
    done = subprocess.run(
        ["zsh", "-f", "-c", "autoload -U compinit && compinit -u && " + script + "\nprint ok"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.strip().endswith("ok"), done.stderr


def test_completion_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert "bashcompinit" in out
    assert "complete -F _picogate_complete picogate" in out

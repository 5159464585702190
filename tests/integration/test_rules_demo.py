"""`picogate demo` runs the example rules (examples/rules/, copied to its working directory): the
rules status is published, the LET point is published like a real one, and editing a copied rule
file while the demo runs reloads it (an error is reported, the last good set keeps running)."""

from __future__ import annotations

import signal
from pathlib import Path

from _agent import recorder
from _demo import running_demo
from picogate.gateway import load_config
from picogate.rules import compile_rules

REPO = Path(__file__).resolve().parents[2]
ROOT = "picogate/demo"
STATUS = f"{ROOT}/rules/status"


def test_example_rules_compile_against_the_example_config() -> None:
    from picogate._declared import declared_points

    registry = declared_points(load_config(REPO / "examples" / "gateway.yaml"))
    files = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "examples" / "rules").glob("*.rules")}
    ruleset = compile_rules(files, list(registry))
    assert {"boiler_overheat", "tank_high", "pump.power_kw"} <= {r.id for r in ruleset.rules}
    assert [p.key for p in ruleset.lets] == ["pump.power_kw"]


def test_demo_runs_the_example_rules_and_reloads_edits(tmp_path: Path) -> None:
    with running_demo(tmp_path, 60) as demo:
        with recorder(demo.host, demo.port, f"{ROOT}/#") as rec:
            status = rec.wait_topic(STATUS, timeout=10)[0].json()
            assert status["ok"], status
            assert status["files"] == ["boiler.rules", "tank.rules"]
            assert {"boiler_overheat", "burner_firing", "tank_high", "pump.power_kw"} <= set(status["rules"])
            topic = f"{ROOT}/data/pump/power_kw"
            good = rec.wait_for(
                lambda ms: any(m.topic == topic and m.json()["q"] == "good" for m in ms),
                timeout=10,
                what="a good power_kw",
            )
            power = next(m.json() for m in good if m.topic == topic and m.json()["q"] == "good")
            assert power["unit"] == "kW"
            assert 1.0 < power["v"] < 10.0  # about 400 V × 11.35 A
            # an operator's typo in the copy the demo runs
            rules = tmp_path / "rules" / "tank.rules"
            rules.write_text(rules.read_text(encoding="utf-8").replace("tank.level > 75", "tank.levl > 75"))
            bad = rec.wait_for(
                lambda ms: any(m.topic == STATUS and not m.json()["ok"] for m in ms),
                timeout=10,
                what="error",
            )
            error = next(m.json() for m in bad if m.topic == STATUS and not m.json()["ok"])["errors"][0]
            assert error["file"] == "tank.rules"
            assert error["suggestion"] == "tank.level"
        demo.proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo's clean stop
        code = demo.proc.wait(timeout=30)
    err = demo.err
    stderr = "".join(err)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "| rules " in stderr  # the summary line shows the rules' states
    assert (REPO / "examples" / "rules" / "tank.rules").read_text().count(
        "tank.levl"
    ) == 0  # the original is untouched

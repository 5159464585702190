"""What changed between two configurations (picogate._reload.diff): which plug-ins to update, and
which keys of the core need a restart."""

from __future__ import annotations

from pathlib import Path

from picogate._reload import ConfigDiff, diff, keep_core, signature
from picogate.gateway import PLUGINS, parse_config

BASE = """
gateway: {id: gw1, data_dir: /tmp/x}
devices:
  - {name: boiler, type: modbus_tcp, host: 127.0.0.1, points: [{name: t, ref: 40001}]}
  - {name: pump, type: modbus_tcp, host: 127.0.0.2, points: [{name: run, ref: 1, writable: true}]}
mqtt: {host: broker.local}
"""


def test_the_same_file_changes_nothing() -> None:
    assert not diff(parse_config(BASE), parse_config(BASE), PLUGINS)


def test_a_changed_device_touches_the_modbus_plugin_only() -> None:
    new = parse_config(BASE.replace("127.0.0.2", "127.0.0.3"))
    assert diff(parse_config(BASE), new, PLUGINS) == ConfigDiff(plugins=("modbus",))


def test_sections_added_and_removed_are_changes() -> None:
    new = parse_config(
        BASE.replace("mqtt: {host: broker.local}", "coap: {nodes: [{name: yard, points: {t: {}}}]}")
    )
    assert diff(parse_config(BASE), new, PLUGINS).plugins == ("mqtt", "coap")


def test_a_value_equal_to_its_default_is_no_change() -> None:
    new = parse_config(BASE.replace("mqtt: {host: broker.local}", "mqtt: {host: broker.local, port: 1883}"))
    assert not diff(parse_config(BASE), new, PLUGINS)


def test_core_keys_are_named_one_by_one_and_kept() -> None:
    old = parse_config(BASE)
    new = parse_config(
        BASE.replace("gateway: {id: gw1, data_dir: /tmp/x}", "gateway: {id: gw2, data_dir: /tmp/x}")
        + "metrics: {port: 9200}\ncommands: {deadline: {mqtt: 9s}}\n"
    )
    changes = diff(old, new, PLUGINS)
    assert changes.plugins == ()
    assert changes.restart == ("gateway.id", "metrics.port")
    assert changes.commands == ("commands.deadline.mqtt",)
    kept = keep_core(old, new)
    assert kept.gateway.id == "gw1"
    assert kept.metrics.port == 9108
    assert kept.commands.deadline.mqtt == 9.0
    assert diff(old, kept, PLUGINS).restart == ()


def test_the_command_routers_limits_apply_at_once_its_queues_at_the_next_start() -> None:
    old = parse_config(BASE)
    new = parse_config(
        BASE + "commands:\n  deadline: {rules: 2s}\n  rate_limit: {burst: 3}\n  max_pending: 10\n"
        "  points: {pump.run: {burst: 1, interval: 1m}}\n  queue_per_device: 4\n  max_payload: 1024\n"
    )
    changes = diff(old, new, PLUGINS)
    assert changes.commands == (
        "commands.deadline.rules",
        "commands.max_pending",
        "commands.points.pump.run",
        "commands.rate_limit.burst",
    )
    assert changes.restart == ("commands.max_payload", "commands.queue_per_device")
    kept = keep_core(old, new).commands
    assert (kept.deadline.rules, kept.rate_limit.burst, kept.max_pending) == (2.0, 3, 10)
    assert kept.points["pump.run"].interval == 60.0
    assert (kept.queue_per_device, kept.max_payload) == (32, 65536)


def test_a_section_that_could_not_be_applied_is_kept() -> None:
    old = parse_config(BASE)
    new = parse_config(BASE.replace("127.0.0.2", "127.0.0.3"))
    assert keep_core(old, new, also=["devices"]).section("devices") == old.section("devices")


def test_the_signature_follows_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    assert signature(path) is None
    path.write_text("a")
    first = signature(path)
    tmp = tmp_path / "new"
    tmp.write_text("a")
    tmp.replace(path)  # same size, same content: another file
    assert signature(path) != first

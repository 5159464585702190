"""The Edge Node's tck-ids that can be checked from the wire, one row each (docs/sparkplug.md's
conformance table names this test for them): one session against the test host on pysparkplug's
codec (tests/_spb.py) — births, data, a rebirth, a DCMD write, a device lost and back, node health,
an intentional disconnect — then every row checked against what the host received."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, running_gateway
from _spb import SpbHost, check_seq, spb_python

GROUP = "tck"
NODE = "gw1"
EDGE_VERBS = ("NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA")
VALID_DATATYPES = set(range(1, 35))
Transcript = list[dict[str, Any]]


def of(t: Transcript, *verbs: str) -> Transcript:
    return [m for m in t if m.get("verb") in verbs]


def births(t: Transcript) -> Transcript:
    return of(t, "NBIRTH", "DBIRTH")


def topic_is(verb: str, device: bool) -> Callable[[Transcript], None]:
    def check(t: Transcript) -> None:
        msgs = of(t, verb)
        assert msgs, f"no {verb}"
        for m in msgs:
            want = f"spBv1.0/{GROUP}/{verb}/{NODE}" + ("/boiler" if device else "")
            assert m["topic"] == want, m["topic"]

    return check


def qos_retain(verb: str, qos: int = 0) -> Callable[[Transcript], None]:
    def check(t: Transcript) -> None:
        msgs = of(t, verb)
        assert msgs, f"no {verb}"
        assert all((m["qos"], m["retain"]) == (qos, False) for m in msgs), [
            (m["qos"], m["retain"]) for m in msgs
        ]

    return check


def has_timestamp(*verbs: str) -> Callable[[Transcript], None]:
    def check(t: Transcript) -> None:
        msgs = of(t, *verbs)
        assert msgs
        assert all(m["timestamp"] and abs(m["timestamp"] - m["recv"] * 1000) < 60_000 for m in msgs)

    return check


def metric_timestamps(t: Transcript) -> None:
    assert all(x["timestamp"] for m in of(t, "NBIRTH", "DBIRTH", "NDATA", "DDATA") for x in m["metrics"])


def seq_included(t: Transcript) -> None:
    assert all(m["seq"] is not None and 0 <= m["seq"] <= 255 for m in of(t, *EDGE_VERBS[:1], *EDGE_VERBS[2:]))


def seq_runs(t: Transcript) -> None:
    check_seq(of(t, *EDGE_VERBS))


def nbirth_seq_0(t: Transcript) -> None:
    assert all(m["seq"] == 0 for m in of(t, "NBIRTH"))


def ndeath_no_seq(t: Transcript) -> None:
    assert of(t, "NDEATH")
    assert all(m["seq"] is None for m in of(t, "NDEATH"))


def ndeath_only_bdseq(t: Transcript) -> None:
    for m in of(t, "NDEATH"):
        assert [(x["name"], x["datatype"]) for x in m["metrics"]] == [("bdSeq", 4)]


def named(m: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in m["metrics"] if x["name"] == name)


def bdseq_in_nbirth(t: Transcript) -> None:
    for m in of(t, "NBIRTH"):
        bd = named(m, "bdSeq")
        assert bd["datatype"] == 4
        assert isinstance(bd["value"], int)


def bdseq_matches_ndeath(t: Transcript) -> None:
    """The NDEATH (the will of that CONNECT) carries the bdSeq of the NBIRTH before it."""
    last = None
    deaths = 0
    for m in of(t, "NBIRTH", "NDEATH"):
        if m.get("verb") == "NBIRTH":
            last = named(m, "bdSeq")["value"]
        else:
            deaths += 1
            assert named(m, "bdSeq")["value"] == last
    assert deaths


def bdseq_same_on_rebirth(t: Transcript) -> None:
    values = [named(m, "bdSeq")["value"] for m in of(t, "NBIRTH")]
    assert len(values) >= 2
    assert len(set(values)) == 1


def bdseq_first_is_0(t: Transcript) -> None:
    assert named(of(t, "NBIRTH")[0], "bdSeq")["value"] == 0


def rebirth_metric(t: Transcript) -> None:
    for m in of(t, "NBIRTH"):
        r = named(m, "Node Control/Rebirth")
        assert (r["datatype"], r["value"], r["alias"]) == (11, False, None)


def birth_metrics_complete(t: Transcript) -> None:
    for m in births(t):
        for x in m["metrics"]:
            assert x["has_name"]
            assert x["datatype"] in VALID_DATATYPES
            assert (x["field"] is not None) != x["is_null"], x  # a value, or is_null and none


def birth_aliases(t: Transcript) -> None:
    for m in births(t):
        for x in m["metrics"]:
            assert x["alias"] is not None or x["name"] == "Node Control/Rebirth"


def alias_unique(t: Transcript) -> None:
    session: dict[int, str] = {}
    for m in births(t):
        if m.get("verb") == "NBIRTH":
            session = {}
        for x in m["metrics"]:
            if x["alias"] is None:
                continue
            key = f"{m['device']}/{x['name']}"
            assert session.setdefault(x["alias"], key) == key, (x["alias"], key)


def data_alias_only(t: Transcript) -> None:
    msgs = of(t, "DDATA", "NDATA")
    assert msgs
    for m in msgs:
        assert all(not x["has_name"] and x["alias"] is not None for x in m["metrics"])


def data_no_datatype(t: Transcript) -> None:
    assert all(x["datatype"] is None for m in of(t, "DDATA", "NDATA") for x in m["metrics"])


def data_every_metric_resolves(t: Transcript) -> None:
    """Only metrics of the births: the host resolves every alias of every DATA message."""
    assert all(x["name"] for m in of(t, "DDATA", "NDATA") for x in m["metrics"])


def dbirths_right_after_nbirth(t: Transcript) -> None:
    """After each NBIRTH: its DBIRTHs come before any DATA."""
    seen_data = True
    for m in of(t, *EDGE_VERBS):
        verb = m.get("verb")
        if verb == "NBIRTH":
            seen_data = False
        elif verb in ("NDATA", "DDATA"):
            seen_data = True
        elif verb == "DBIRTH" and seen_data:
            # a DBIRTH later in the session is a device coming back after its DDEATH
            deaths = [x for x in of(t, "DDEATH", "DBIRTH") if x["recv"] <= m["recv"]]
            assert len(deaths) >= 2, "DBIRTH after DATA"
            assert deaths[-2].get("verb") == "DDEATH", "DBIRTH after DATA"


def first_is_nbirth(t: Transcript) -> None:
    assert of(t, *EDGE_VERBS)[0].get("verb") == "NBIRTH"


def births_in_time_order(t: Transcript) -> None:
    for m in of(t, "NBIRTH", "DBIRTH", "NDATA", "DDATA"):
        live = [x["timestamp"] for x in m["metrics"] if not x["is_historical"]]
        if m.get("verb") in ("NDATA", "DDATA"):
            assert live == sorted(live)


def properties_well_formed(t: Transcript) -> None:
    seen = 0
    for m in of(t, "DBIRTH", "DDATA"):
        for x in m["metrics"]:
            props = dict(x["props"])
            types = props.pop("__types__", {})
            assert set(types) == set(props)  # keys and values in step (the host zips them)
            for k, ty in types.items():
                seen += 1
                assert ty in (*range(1, 15), 20, 21), (k, ty)
    assert seen


def quality_property(t: Transcript) -> None:
    qualities = [
        (x["props"]["__types__"]["Quality"], x["props"]["Quality"])
        for m in of(t, "DBIRTH", "DDATA")
        for x in m["metrics"]
        if "Quality" in x["props"]
    ]
    assert qualities, "no Quality property seen (boiler.spare is bad)"
    assert all(ty == 3 and v in (0, 192, 500) for ty, v in qualities)


def null_values(t: Transcript) -> None:
    for m in of(t, "DBIRTH"):
        for x in m["metrics"]:
            if x["is_null"]:
                assert x["field"] is None


def ddeath_and_rebirth_of_device(t: Transcript) -> None:
    verbs = [m.get("verb") for m in of(t, "DDEATH", "DBIRTH")]
    assert "DDEATH" in verbs
    assert verbs[verbs.index("DDEATH") + 1 :].count("DBIRTH") >= 1


def ddeath_payload(t: Transcript) -> None:
    for m in of(t, "DDEATH"):
        assert m["seq"] is not None
        assert m["timestamp"]


def device_topic_levels(t: Transcript) -> None:
    for m in of(t, *EDGE_VERBS):
        levels = len(m["topic"].split("/"))
        assert levels == (5 if m.get("verb", "").startswith("D") else 4), m["topic"]


def names_unique_lower(t: Transcript) -> None:
    for m in births(t):
        names = [x["name"].lower() for x in m["metrics"]]
        assert len(names) == len(set(names))


def rebirth_answered(t: Transcript) -> None:
    """After the NCMD rebirth: the next message of the node is an NBIRTH, then the DBIRTH."""
    for i, m in enumerate(t):
        if m.get("verb") == "NCMD":
            following = [x.get("verb") for x in of(t[i + 1 :], *EDGE_VERBS)]
            assert following[:2] == ["NBIRTH", "DBIRTH"], following[:4]
            return
    raise AssertionError("no NCMD in the transcript")


def ndata_health(t: Transcript) -> None:
    assert of(t, "NDATA"), "no NDATA (Gateway/Devices Online changed when the device was lost)"


def changes_only(t: Transcript) -> None:
    """Report by exception: a live DATA metric differs from what was last sent of it (value or
    Quality), births included."""
    last: dict[tuple[str, str], object] = {}
    seen = 0
    for m in of(t, "NBIRTH", "DBIRTH", "NDATA", "DDATA"):
        for x in m["metrics"]:
            key = (m["device"], x["name"])
            now = (x["value"], x["is_null"], x["props"].get("Quality"))
            if m.get("verb") in ("NDATA", "DDATA") and not x["is_historical"]:
                seen += 1
                assert last.get(key) != now, (key, now)
            if not x["is_historical"]:
                last[key] = now
    assert seen


CHECKS: dict[str, Callable[[Transcript], None]] = {
    "tck-id-principles-rbe-recommended": changes_only,
    "tck-id-message-flow-edge-node-birth-publish-connect": first_is_nbirth,
    "tck-id-operational-behavior-edge-node-intentional-disconnect-packet": bdseq_matches_ndeath,
    "tck-id-operational-behavior-data-publish-nbirth-change": changes_only,
    "tck-id-operational-behavior-data-publish-dbirth-change": changes_only,
    "tck-id-principles-birth-certificates-order": first_is_nbirth,
    "tck-id-topic-structure": device_topic_levels,
    "tck-id-topic-structure-namespace-a": topic_is("NBIRTH", False),
    "tck-id-topic-structure-namespace-device-id-associated-message-types": device_topic_levels,
    "tck-id-topic-structure-namespace-device-id-non-associated-message-types": device_topic_levels,
    "tck-id-topics-nbirth-topic": topic_is("NBIRTH", False),
    "tck-id-topics-nbirth-mqtt": qos_retain("NBIRTH"),
    "tck-id-topics-nbirth-seq-num": nbirth_seq_0,
    "tck-id-topics-nbirth-timestamp": has_timestamp("NBIRTH"),
    "tck-id-topics-nbirth-metric-reqs": data_every_metric_resolves,
    "tck-id-topics-nbirth-metrics": birth_metrics_complete,
    "tck-id-topics-nbirth-bdseq-included": bdseq_in_nbirth,
    "tck-id-topics-nbirth-bdseq-matching": bdseq_matches_ndeath,
    "tck-id-topics-nbirth-bdseq-increment": bdseq_first_is_0,
    "tck-id-topics-nbirth-rebirth-metric": rebirth_metric,
    "tck-id-topics-ndata-topic": topic_is("NDATA", False),
    "tck-id-topics-ndata-mqtt": qos_retain("NDATA"),
    "tck-id-topics-ndata-seq-num": seq_runs,
    "tck-id-topics-ndata-timestamp": has_timestamp("NDATA"),
    "tck-id-topics-ndata-payload": ndata_health,
    "tck-id-topics-ndeath-topic": topic_is("NDEATH", False),
    "tck-id-topics-ndeath-payload": ndeath_only_bdseq,
    "tck-id-topics-ndeath-seq": ndeath_no_seq,
    "tck-id-topics-dbirth-topic": topic_is("DBIRTH", True),
    "tck-id-topics-dbirth-mqtt": qos_retain("DBIRTH"),
    "tck-id-topics-dbirth-seq": seq_runs,
    "tck-id-topics-dbirth-timestamp": has_timestamp("DBIRTH"),
    "tck-id-topics-dbirth-metric-reqs": data_every_metric_resolves,
    "tck-id-topics-dbirth-metrics": birth_metrics_complete,
    "tck-id-topics-ddata-topic": topic_is("DDATA", True),
    "tck-id-topics-ddata-mqtt": qos_retain("DDATA"),
    "tck-id-topics-ddata-seq-num": seq_runs,
    "tck-id-topics-ddata-timestamp": has_timestamp("DDATA"),
    "tck-id-topics-ddata-payload": data_every_metric_resolves,
    "tck-id-topics-ddeath-topic": topic_is("DDEATH", True),
    "tck-id-topics-ddeath-mqtt": qos_retain("DDEATH"),
    "tck-id-topics-ddeath-seq-num": seq_runs,
    "tck-id-case-sensitivity-metric-names": names_unique_lower,
    "tck-id-message-flow-edge-node-birth-publish-will-message-topic": topic_is("NDEATH", False),
    "tck-id-message-flow-edge-node-birth-publish-will-message-payload": ndeath_only_bdseq,
    "tck-id-message-flow-edge-node-birth-publish-will-message-qos": qos_retain("NDEATH", 1),
    "tck-id-message-flow-edge-node-birth-publish-will-message-will-retained": qos_retain("NDEATH", 1),
    "tck-id-message-flow-edge-node-birth-publish-nbirth-topic": topic_is("NBIRTH", False),
    "tck-id-message-flow-edge-node-birth-publish-nbirth-payload": birth_metrics_complete,
    "tck-id-message-flow-edge-node-birth-publish-nbirth-qos": qos_retain("NBIRTH"),
    "tck-id-message-flow-edge-node-birth-publish-nbirth-retained": qos_retain("NBIRTH"),
    "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-seq": nbirth_seq_0,
    "tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath": bdseq_matches_ndeath,
    "tck-id-message-flow-device-birth-publish-nbirth-wait": dbirths_right_after_nbirth,
    "tck-id-message-flow-device-birth-publish-dbirth-topic": topic_is("DBIRTH", True),
    "tck-id-message-flow-device-birth-publish-dbirth-match-edge-node-topic": topic_is("DBIRTH", True),
    "tck-id-message-flow-device-birth-publish-dbirth-payload": birth_metrics_complete,
    "tck-id-message-flow-device-birth-publish-dbirth-qos": qos_retain("DBIRTH"),
    "tck-id-message-flow-device-birth-publish-dbirth-retained": qos_retain("DBIRTH"),
    "tck-id-message-flow-device-birth-publish-dbirth-payload-seq": seq_runs,
    "tck-id-operational-behavior-device-ddeath": ddeath_and_rebirth_of_device,
    "tck-id-operational-behavior-data-publish-nbirth": data_every_metric_resolves,
    "tck-id-operational-behavior-data-publish-nbirth-values": null_values,
    "tck-id-operational-behavior-data-publish-nbirth-order": births_in_time_order,
    "tck-id-operational-behavior-data-publish-dbirth": data_every_metric_resolves,
    "tck-id-operational-behavior-data-publish-dbirth-values": null_values,
    "tck-id-operational-behavior-data-publish-dbirth-order": births_in_time_order,
    "tck-id-operational-behavior-data-commands-rebirth-name": rebirth_metric,
    "tck-id-operational-behavior-data-commands-rebirth-name-aliases": rebirth_metric,
    "tck-id-operational-behavior-data-commands-rebirth-datatype": rebirth_metric,
    "tck-id-operational-behavior-data-commands-rebirth-value": rebirth_metric,
    "tck-id-operational-behavior-data-commands-rebirth-action-1": rebirth_answered,
    "tck-id-operational-behavior-data-commands-rebirth-action-2": rebirth_answered,
    "tck-id-operational-behavior-data-commands-rebirth-action-3": bdseq_same_on_rebirth,
    "tck-id-payloads-sequence-num-always-included": seq_included,
    "tck-id-payloads-sequence-num-incrementing": seq_runs,
    "tck-id-payloads-name-requirement": birth_metrics_complete,
    "tck-id-payloads-alias-uniqueness": alias_unique,
    "tck-id-payloads-alias-birth-requirement": birth_aliases,
    "tck-id-payloads-alias-data-cmd-requirement": data_alias_only,
    "tck-id-payloads-name-birth-data-requirement": metric_timestamps,
    "tck-id-payloads-metric-datatype-value-type": birth_metrics_complete,
    "tck-id-payloads-metric-datatype-value": birth_metrics_complete,
    "tck-id-payloads-metric-datatype-req": birth_metrics_complete,
    "tck-id-payloads-metric-datatype-not-req": data_no_datatype,
    "tck-id-payloads-propertyset-keys-array-size": properties_well_formed,
    "tck-id-payloads-propertyset-values-array-size": properties_well_formed,
    "tck-id-payloads-metric-propertyvalue-type-type": properties_well_formed,
    "tck-id-payloads-metric-propertyvalue-type-value": properties_well_formed,
    "tck-id-payloads-metric-propertyvalue-type-req": properties_well_formed,
    "tck-id-payloads-propertyset-quality-value-type": quality_property,
    "tck-id-payloads-propertyset-quality-value-value": quality_property,
    "tck-id-payloads-nbirth-timestamp": has_timestamp("NBIRTH"),
    "tck-id-payloads-nbirth-seq": nbirth_seq_0,
    "tck-id-payloads-nbirth-bdseq": bdseq_in_nbirth,
    "tck-id-payloads-nbirth-bdseq-repeat": bdseq_matches_ndeath,
    "tck-id-payloads-nbirth-rebirth-req": rebirth_metric,
    "tck-id-payloads-nbirth-qos": qos_retain("NBIRTH"),
    "tck-id-payloads-nbirth-retain": qos_retain("NBIRTH"),
    "tck-id-payloads-dbirth-timestamp": has_timestamp("DBIRTH"),
    "tck-id-payloads-dbirth-seq": seq_included,
    "tck-id-payloads-dbirth-seq-inc": seq_runs,
    "tck-id-payloads-dbirth-order": dbirths_right_after_nbirth,
    "tck-id-payloads-dbirth-qos": qos_retain("DBIRTH"),
    "tck-id-payloads-dbirth-retain": qos_retain("DBIRTH"),
    "tck-id-payloads-ndata-timestamp": has_timestamp("NDATA"),
    "tck-id-payloads-ndata-seq": seq_included,
    "tck-id-payloads-ndata-seq-inc": seq_runs,
    "tck-id-payloads-ndata-order": dbirths_right_after_nbirth,
    "tck-id-payloads-ndata-qos": qos_retain("NDATA"),
    "tck-id-payloads-ndata-retain": qos_retain("NDATA"),
    "tck-id-payloads-ddata-timestamp": has_timestamp("DDATA"),
    "tck-id-payloads-ddata-seq": seq_included,
    "tck-id-payloads-ddata-seq-inc": seq_runs,
    "tck-id-payloads-ddata-order": dbirths_right_after_nbirth,
    "tck-id-payloads-ddata-qos": qos_retain("DDATA"),
    "tck-id-payloads-ddata-retain": qos_retain("DDATA"),
    "tck-id-payloads-ndeath-seq": ndeath_no_seq,
    "tck-id-payloads-ndeath-will-message-qos": qos_retain("NDEATH", 1),
    "tck-id-payloads-ndeath-will-message-retain": qos_retain("NDEATH", 1),
    "tck-id-payloads-ndeath-bdseq": bdseq_matches_ndeath,
    "tck-id-payloads-ndeath-will-message-publisher": bdseq_matches_ndeath,
    "tck-id-payloads-ddeath-timestamp": ddeath_payload,
    "tck-id-payloads-ddeath-seq": ddeath_payload,
    "tck-id-payloads-ddeath-seq-inc": seq_runs,
    "tck-id-payloads-ddeath-seq-number": seq_runs,
}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_tck_on_the_wire(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, protocol: str) -> None:
    spb_python()
    # input register 7 answers with an exception: the point "spare" is bad while the device is online
    dev = await modbus_tcp_server(
        {1: {"hr": {0: [215, 40, (-7) & 0xFFFF, 0x0000, 0x4148]}, "invalid": {"ir": [7]}}}
    )
    host = SpbHost(mosquitto.port, GROUP)
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [
            {
                "name": "boiler",
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": dev.port,
                "poll": "100ms",
                "timeout": "200ms",
                "offline_after": 1,
                "points": [
                    {
                        "name": "temp",
                        "table": "holding",
                        "address": 0,
                        "type": "int16",
                        "scale": 0.1,
                        "unit": "°C",
                    },
                    {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "max": 900},
                    {"name": "offset", "table": "holding", "address": 2, "type": "int16"},
                    {"name": "flow", "table": "holding", "address": 3, "type": "float32", "order": "CDAB"},
                    {"name": "spare", "table": "input", "address": 7},
                ],
            }
        ],
    )
    cfg["mqtt"] = {"enabled": False}
    cfg["sparkplug"] = {
        "group_id": GROUP,
        "servers": [{"host": "127.0.0.1", "port": mosquitto.port}],
        "primary_host_id": "scada",
        "protocol": protocol,
        "health_interval": "200ms",
        "reconnect": {"min_delay": "100ms", "max_delay": "500ms"},
    }
    try:
        host.cmd("online")
        async with running_gateway(cfg):
            await asyncio.to_thread(host.wait_for, lambda t: bool(of(t, "DBIRTH")), 15, "DBIRTH")
            dev.set_holding(1, 0, [230])
            await asyncio.to_thread(host.wait_for, lambda t: bool(of(t, "DDATA")), 15, "DDATA")
            host.cmd("rebirth", node=NODE)
            await asyncio.to_thread(host.wait_for, lambda t: len(of(t, "NBIRTH")) >= 2, 15, "rebirth")
            host.cmd("dcmd", node=NODE, device="boiler", name="setpoint", value=650)
            for _ in range(100):
                if dev.get_holding(1, 1) == [650]:
                    break
                await asyncio.sleep(0.05)
            assert dev.get_holding(1, 1) == [650], "DCMD write (tck-id-...-dcmd-metric-value)"
            await dev.stop()  # the device is lost: DDEATH
            await asyncio.to_thread(host.wait_for, lambda t: bool(of(t, "DDEATH")), 15, "DDEATH")
            # the node's health changed (Gateway/Devices Online): NDATA
            await asyncio.to_thread(host.wait_for, lambda t: bool(of(t, "NDATA")), 15, "NDATA")
            await dev.start()  # and back: DBIRTH
            await asyncio.to_thread(
                host.wait_for,
                lambda t: any(m.get("verb") == "DBIRTH" for m in t[t.index(of(t, "DDEATH")[0]) :]),
                15,
                "DBIRTH after DDEATH",
            )
        # the gateway stopped on purpose: NDEATH (MQTT 5: DISCONNECT 0x04; 3.1.1: published first)
        await asyncio.to_thread(host.wait_for, lambda t: bool(of(t, "NDEATH")), 15, "NDEATH")
        transcript = [m for m in host.messages if m.get("node") == NODE]
    finally:
        host.close()
    failed = []
    for tck, check in CHECKS.items():
        try:
            check(transcript)
        except AssertionError as exc:
            failed.append(f"{tck}: {exc}")
    assert not failed, "\n".join(failed)

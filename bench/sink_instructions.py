"""Instructions per message of the MQTT sink's delivery (scenario b's path), under callgrind.

Delivers `--records` outbox records of 30 per-point messages each (QoS 1, as the encoder bundles
them) through `MqttSink.deliver` and a real `MqttClient` to a mosquitto on loopback, on uvloop,
four batches in flight as `RunningSink` keeps them (`--batch` records each: in scenario b a
commit every 10 ms holds about 5 polls' records).  Run it under callgrind twice,
with two record counts: the difference of the totals divided by the difference of the message
counts is the cost of one message, without start-up:

    for n in 200 400; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.$n \\
        .venv/bin/python bench/sink_instructions.py --records $n
    done   # then: (Ir of cg.400 - Ir of cg.200) / (200 * 30)

`--agent DIR` imports the agent from another tree (e.g. one extracted with `git archive`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
POINTS = 30
WINDOW = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10, help="records per delivery")
    ap.add_argument("--agent", type=Path, help="the agent/ folder of another tree to import")
    args = ap.parse_args()
    if args.agent is not None:
        sys.path.insert(0, str(args.agent.resolve()))
    sys.path.insert(0, str(BENCH))
    import uvloop

    from _bench import start_broker, stop_all

    with tempfile.TemporaryDirectory() as tmp:
        try:
            _, port = start_broker(Path(tmp), None, inflight=1000)
            delivered = uvloop.run(run(port, args.records, args.batch))
        finally:
            stop_all()
    print(f"delivered {delivered} messages in {args.records} records")


async def run(port: int, count: int, batch: int) -> int:
    from picogate._outbox import Record
    from picogate.mqtt import MqttClient, MqttSink, Topics

    def factory(**kw: object) -> MqttClient:
        return MqttClient(host="127.0.0.1", port=port, client_id="cg", max_inflight=1000, **kw)  # type: ignore[arg-type]

    sink = MqttSink(client_factory=factory, topics=Topics("pg", "gw"), status_payload=lambda s: s.encode())
    await sink.open()
    records = []
    for i in range(count):
        parts = []
        for p in range(POINTS):
            parts.append(f"r{p}".encode())
            parts.append(b'{"v":%d,"ts":1765000000000,"unit":"","q":"good"}' % (i * POINTS + p))
        records.append(
            Record(i + 1, "mqtt", f"pg/gw/data/dev{i % 500}/", b"\x00".join(parts), 1, False, 0, POINTS)
        )
    batches = [records[i : i + batch] for i in range(0, count, batch)]
    for first in range(0, len(batches), WINDOW):
        results = await asyncio.gather(*(sink.deliver(b) for b in batches[first : first + WINDOW]))
        assert not any(results), results
    await sink.close()
    return count * POINTS


if __name__ == "__main__":
    main()

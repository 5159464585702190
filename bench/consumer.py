"""Benchmark consumer: subscribes to the gateway's data topics (paho-mqtt, QoS 1) and counts.

It subscribes to `<base>/<gw>/#` and counts every live message (for the broker's backlog), and
it proves that every point is delivered: for every data message it counts the message, the
readings it carries (one for `publish: point`, one per point for `publish: device`) and whether
the (topic, ts, payload) is new for that topic, and it measures the lag from the reading's timestamp
(the agent's clock, ms) to the moment the message arrived here.  Readings of quality `bad` are
counted apart (a device the simulator paused goes bad after a few failed polls).

Control, one command per line on stdin, one JSON line on stdout per command:

    stats     cumulative counters since start
    mark      start a measurement window (resets the window's counters and lag histogram)
    window    counters and lag percentiles since the last `mark`
    quit      exit

`{"ready": true}` is printed once the subscription is acknowledged.  It exits when stdin closes.

    python bench/consumer.py --port 1883 --topic 'picogate/bench/#'
    python bench/consumer.py --port 1883 --topic 'spBv1.0/bench/#' --sparkplug   (DDATA: one message
        per device and poll, the metrics' newest timestamp for the lag; `is_null` metrics are bad)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from typing import Any

import orjson
import paho.mqtt.client as paho

from picogate.sparkplug import _sparkplug_b_pb2 as _spb  # the agent's own schema module

_RECENT = 32
_HIST_MS = 60_000  # lag histogram: 1 ms buckets up to 60 s, then one overflow bucket


class Counters:
    __slots__ = (
        "all_msgs",
        "bad",
        "dups",
        "first_t",
        "hist",
        "lag_max",
        "lag_sum",
        "last_t",
        "msgs",
        "per_s",
        "points",
        "reordered"
    )  # fmt: skip

    def __init__(self) -> None:
        self.all_msgs = 0  # every live message, data or not (for the broker backlog)
        self.msgs = 0
        self.points = 0  # good or uncertain readings in new (topic, ts) messages
        self.bad = 0
        self.dups = 0  # messages whose (topic, ts) was seen before
        self.reordered = 0  # new (topic, ts) older than the newest seen on the topic: sent out of order
        self.lag_sum = 0.0
        self.lag_max = 0.0
        self.hist = [0] * (_HIST_MS + 1)
        self.first_t = 0.0
        self.last_t = 0.0
        self.per_s: dict[int, int] = {}  # points (good, new) per wall-clock second

    def spread(self) -> dict[str, Any] | None:
        """Points delivered per whole second (the first and last, partial, seconds left out)."""
        if len(self.per_s) < 3:
            return None
        secs = range(min(self.per_s) + 1, max(self.per_s))
        counts = sorted(self.per_s.get(t, 0) for t in secs)
        n = len(counts)
        mean = sum(counts) / n
        return {
            "seconds": n,
            "min": counts[0],
            "p5": counts[int(0.05 * (n - 1))],
            "p50": counts[n // 2],
            "p95": counts[int(0.95 * (n - 1))],
            "max": counts[-1],
            "stdev": round((sum((c - mean) ** 2 for c in counts) / n) ** 0.5, 1),
        }

    def summary(self) -> dict[str, Any]:
        n = sum(self.hist)
        out: dict[str, Any] = {
            "all_msgs": self.all_msgs,
            "msgs": self.msgs,
            "points": self.points,
            "bad": self.bad,
            "dups": self.dups,
            "reordered": self.reordered,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "lag_avg_ms": round(self.lag_sum / n, 2) if n else None,
            "lag_max_ms": round(self.lag_max, 1) if n else None,
            "per_s": self.spread(),
        }
        for q in (50, 95, 99):
            out[f"lag_p{q}_ms"] = _percentile(self.hist, n, q / 100) if n else None
        return out


def _percentile(hist: list[int], n: int, q: float) -> int:
    target = q * n
    acc = 0
    for ms, c in enumerate(hist):
        acc += c
        if acc >= target:
            return ms
    return len(hist) - 1


def _sparkplug_ddata(payload: bytes) -> tuple[int, int, int] | None:
    """(newest metric timestamp in ms, good metrics, null metrics) of a Sparkplug DDATA."""
    p = _spb.Payload()
    try:
        p.ParseFromString(payload)
    except Exception:
        return None
    if not p.metrics:
        return None
    bad = sum(1 for m in p.metrics if m.is_null)
    return max(m.timestamp for m in p.metrics), len(p.metrics) - bad, bad


class Consumer:
    def __init__(
        self, host: str, port: int, topic: str, client_id: str, clean: bool, sparkplug: bool = False
    ) -> None:
        self.topic = topic
        self.sparkplug = sparkplug
        self.data_prefix = topic.removesuffix("#") + ("DDATA/" if sparkplug else "data/")
        self.total = Counters()
        self.window = Counters()
        self.last_ts: dict[str, int] = {}  # newest ts per topic
        # the last _RECENT (ts, payload) per topic, to tell a duplicate from a late one
        self.recent: dict[str, deque[tuple[int, bytes]]] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=paho.MQTTv311
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        self.host, self.port = host, port

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, m: paho.MQTTMessage) -> None:
        now_ms = time.time() * 1000.0
        if m.retain:  # a retained copy from an earlier run, not a live message
            return
        topic = m.topic
        if not topic.startswith(self.data_prefix):
            with self.lock:
                self.total.all_msgs += 1
                self.window.all_msgs += 1
            return
        if self.sparkplug:
            decoded = _sparkplug_ddata(m.payload)
            if decoded is None:
                return
            ts, good, bad = decoded
            self._count(topic, ts, good, bad, now_ms, m.payload)
            return
        try:
            body = orjson.loads(m.payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict) or "ts" not in body:
            return
        ts = body["ts"]
        points = body.get("points")
        if isinstance(points, dict):
            good = sum(1 for p in points.values() if p.get("q") != "bad")
            bad = len(points) - good
        elif body.get("q") == "bad":
            good, bad = 0, 1
        else:
            good, bad = 1, 0
        self._count(topic, ts, good, bad, now_ms, m.payload)

    def _count(self, topic: str, ts: int, good: int, bad: int, now_ms: float, payload: bytes) -> None:
        lag = max(0.0, now_ms - ts)
        bucket = min(int(lag), _HIST_MS)
        with self.lock:
            last = self.last_ts.get(topic)
            recent = self.recent.get(topic)
            if recent is None:
                recent = self.recent[topic] = deque(maxlen=_RECENT)
            # A duplicate is the same message again (QoS 1 re-sends): same ts *and* payload. Two
            # polls within one millisecond carry the same ts with other values: both count.
            key = (ts, payload)
            dup = key in recent
            late = not dup and last is not None and ts < last
            if not dup:
                recent.append(key)
                if last is None or ts > last:
                    self.last_ts[topic] = ts
            for c in (self.total, self.window):
                c.all_msgs += 1
                c.msgs += 1
                if dup:
                    c.dups += 1
                else:
                    c.points += good
                    sec = int(now_ms // 1000)
                    c.per_s[sec] = c.per_s.get(sec, 0) + good
                    c.bad += bad
                    c.reordered += late
                c.lag_sum += lag
                if lag > c.lag_max:
                    c.lag_max = lag
                c.hist[bucket] += 1
                if not c.first_t:
                    c.first_t = now_ms / 1000.0
                c.last_t = now_ms / 1000.0

    def command(self, cmd: str) -> dict[str, Any]:
        with self.lock:
            if cmd == "stats":
                out = self.total.summary()
                out["topics"] = len(self.last_ts)
                return out
            if cmd == "mark":
                self.window = Counters()
                return {"marked": time.time()}
            if cmd == "window":
                out = self.window.summary()
                out["t"] = time.time()
                return out
        return {"error": f"unknown command {cmd!r}"}


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--client-id", default="picogate-bench-consumer")
    p.add_argument("--persistent", action="store_true", help="clean_session=false (a persistent session)")
    p.add_argument(
        "--sparkplug", action="store_true", help="count Sparkplug B DDATA metrics (topic spBv1.0/<group>/#)"
    )
    args = p.parse_args()
    c = Consumer(
        args.host, args.port, args.topic, args.client_id, clean=not args.persistent, sparkplug=args.sparkplug
    )
    c.client.connect(args.host, args.port, keepalive=30)
    c.client.loop_start()
    try:
        if not c.subscribed.wait(10):
            _emit({"error": "subscription not acknowledged within 10 s"})
            return
        _emit({"ready": True})
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "quit":
                break
            if cmd:
                _emit(c.command(cmd))
    finally:
        c.client.disconnect()
        c.client.loop_stop()


if __name__ == "__main__":
    main()

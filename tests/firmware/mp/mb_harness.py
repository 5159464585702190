# Runs picogate_fw.mb_master on MicroPython's unix port against a host tty, for the integration
# tests and the benchmark: micropython mb_harness.py SPEC.json (firmware/ on MICROPYPATH).
# SPEC: {"tty": path, "cfg": <one "mb" config entry>, "ms": run time, "max_tx": stop after that
#        many transactions (0: no limit), "writes": [{"at": ms, "u", "fc", "a", "v"}],
#        "read_now": [{"at": ms, "req": i}], "quiet": true (no per-result lines)}
# Prints one JSON line per result ({"t", "req", "st", "data"} or {"t", "w", "st", "code"}), a
# line {"de": [...]} with the DE pin's transitions (first 40), then {"stats": {...}}.
import json
import sys
import time

import asyncio

from picogate_fw import mb_master, sim_uart

T0 = time.ticks_ms()


class DePin:
    def __init__(self):
        self.v = 0
        self.log = []

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        if len(self.log) < 40:
            self.log.append(self.v)


def _t():
    return time.ticks_diff(time.ticks_ms(), T0)


async def main(spec):
    quiet = spec.get("quiet", False)
    counts = {}

    def on_result(bus, i, st, data):
        counts[st] = counts.get(st, 0) + 1
        if quiet:
            return
        if st == "ok":
            data = bytes(data).hex()
        print(json.dumps({"t": _t(), "req": i, "st": st, "data": data}))

    de = DePin()
    uart = sim_uart.SimUART(spec["tty"], spec["cfg"].get("baud", 19200))
    m = mb_master.Master(None, spec["cfg"], on_result, uart=uart, de=de)
    task = asyncio.create_task(m.run())
    writes = spec.get("writes", [])  # in time order (MicroPython's sort is not stable)
    nows = spec.get("read_now", [])
    end = spec.get("ms", 1000)
    max_tx = spec.get("max_tx", 0)
    wi = 0

    def done_for(k):
        def done(st, code=None):
            print(json.dumps({"t": _t(), "w": k, "st": st, "code": code}))

        return done

    while _t() < end and not (max_tx and m.n_tx >= max_tx):
        while writes and writes[0]["at"] <= _t():
            w = writes.pop(0)
            m.write(w["u"], w["fc"], w["a"], w["v"], done_for(wi))
            wi += 1
        while nows and nows[0]["at"] <= _t():
            m.read_now(nows.pop(0)["req"])
        await asyncio.sleep_ms(5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    m.close()
    print(json.dumps({"de": de.log}))
    st = m.stats()
    st["results"] = counts
    st["elapsed_ms"] = _t()
    print(json.dumps({"stats": st}))


with open(sys.argv[1]) as f:
    asyncio.run(main(json.load(f)))

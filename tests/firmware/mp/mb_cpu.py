# The master's own cost per transaction without any I/O: micropython mb_cpu.py N (firmware/ and
# tests/firmware/mp on MICROPYPATH). The line is mp_mb_master.Line (slaves answer at once, in
# memory), so what is left is the master's code: scheduling, t3.5 bookkeeping, CRC check, the
# result callback. Prints {"tx": N, "own_us_per_tx": ..., "crc_us": ...}.
import json
import sys
import time

import asyncio
from mp_mb_master import Line

from picogate_fw import mb_master, mb_rtu

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
line = Line({1: list(range(10))})
done = [0]


def on_result(bus, i, st, data):
    done[0] += 1


cfg = {"bus": 0, "baud": 115200, "timeout_ms": 50, "retries": 0, "backoff_ms": 0,
       "reqs": [{"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 1}]}
m = mb_master.Master(None, cfg, on_result, uart=line)


async def main():
    t = asyncio.create_task(m.run())
    while done[0] < N:
        await asyncio.sleep_ms(10)
    t.cancel()


asyncio.run(main())
rep = line.replies[1]
t0 = time.ticks_us()
for _ in range(1000):
    mb_rtu.check_reply(m._frames[0], rep, len(rep))
crc_us = time.ticks_diff(time.ticks_us(), t0) / 1000
print(json.dumps({"tx": m.n_tx, "own_us_per_tx": round((m.tx_us - m.wait_us) / m.n_tx, 1),
                  "check_reply_us": round(crc_us, 2)}))

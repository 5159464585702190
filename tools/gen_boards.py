"""Write boards/*.json from the RP2040/RP2350 pin-function tables (run once; the JSON is the data).

GPIO function pattern shared by RP2040 and RP2350 (GPIO 0-29; datasheets, section "Function
select"): PWM slice (gpio >> 1) & 7, channel A/B by gpio & 1; UART ((gpio + 4) >> 3) & 1 with
TX/RX/CTS/RTS by gpio % 4; I2C (gpio >> 1) & 1 with SDA on even, SCL on odd pins; SPI
(gpio >> 3) & 1 with RX/CSn/SCK/TX by gpio % 4; ADC channel gpio - 26 on GP26-29.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

UART_FN = ("tx", "rx", "cts", "rts")
SPI_FN = ("rx", "csn", "sck", "tx")


def pin(gpio: int) -> dict[str, Any]:
    return {
        "gpio": gpio,
        "name": f"GP{gpio}",
        "pwm": {"slice": (gpio >> 1) & 7, "channel": "AB"[gpio & 1]},
        "uart": {"id": ((gpio + 4) >> 3) & 1, "fn": UART_FN[gpio % 4]},
        "i2c": {"id": (gpio >> 1) & 1, "fn": "sda" if gpio % 2 == 0 else "scl"},
        "spi": {"id": (gpio >> 3) & 1, "fn": SPI_FN[gpio % 4]},
        "adc": gpio - 26 if 26 <= gpio <= 29 else None,
    }


BOARDS: dict[str, dict[str, Any]] = {
    "pico": {
        "title": "Raspberry Pi Pico",
        "chip": "rp2040",
        "mpy_arch": "armv6m",
        "gpio": [*range(0, 23), 25, 26, 27, 28],
        "led": 25,
        "heap_kb": 192,
        "fs_kb": 1408,
        "flash_kb": 2048,
        "reserved": {"23": "SMPS power save", "24": "VBUS sense", "25": "onboard LED", "29": "VSYS/3 (ADC3)"},
    },
    "pico_w": {
        "title": "Raspberry Pi Pico W",
        "chip": "rp2040",
        "mpy_arch": "armv6m",
        "gpio": [*range(0, 23), 26, 27, 28],
        "led": "LED",
        "heap_kb": 166,
        "fs_kb": 848,
        "flash_kb": 2048,
        "reserved": {
            "23": "wireless chip",
            "24": "wireless chip",
            "25": "wireless chip",
            "29": "wireless chip",
        },
    },
    "pico2": {
        "title": "Raspberry Pi Pico 2",
        "chip": "rp2350",
        "mpy_arch": "armv7emsp",
        "gpio": [*range(0, 23), 25, 26, 27, 28],
        "led": 25,
        "heap_kb": 480,
        "fs_kb": 3072,
        "flash_kb": 4096,
        "reserved": {"23": "SMPS power save", "24": "VBUS sense", "25": "onboard LED", "29": "VSYS/3 (ADC3)"},
    },
    "pico2_w": {
        "title": "Raspberry Pi Pico 2 W",
        "chip": "rp2350",
        "mpy_arch": "armv7emsp",
        "gpio": [*range(0, 23), 26, 27, 28],
        "led": "LED",
        "heap_kb": 440,
        "fs_kb": 2560,
        "flash_kb": 4096,
        "reserved": {
            "23": "wireless chip",
            "24": "wireless chip",
            "25": "wireless chip",
            "29": "wireless chip",
        },
    },
}


def main(out: Path) -> None:
    for name, spec in BOARDS.items():
        doc = {
            "name": name,
            "title": spec["title"],
            "chip": spec["chip"],
            "mpy_arch": spec["mpy_arch"],
            "usb": {"vid": "2E8A", "pid": "0005"},
            "led": spec["led"],
            "heap_kb": spec["heap_kb"],
            "fs_kb": spec["fs_kb"],
            "flash_kb": spec["flash_kb"],
            "temp_sensor": True,
            "reserved": spec["reserved"],
            "pins": [pin(g) for g in spec["gpio"]],
        }
        pins = doc.pop("pins")
        head = json.dumps(doc, indent=1)[:-2]  # without the closing brace
        rows = ",\n  ".join(json.dumps(p) for p in pins)
        (out / f"{name}.json").write_text(f'{head},\n "pins": [\n  {rows}\n ]\n}}\n')


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "boards"))

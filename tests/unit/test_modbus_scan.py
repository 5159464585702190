"""The scan's pure parts as data: unit ranges, the serial settings and their order, when the search
stops, what counts as an answer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from picogate.modbus import (
    BAUD_RATES,
    ScanError,
    ScanLine,
    Setting,
    UnitAnswer,
    parse_units,
    search,
    serial_settings,
)
from picogate.modbus._scan import answer_of
from picogate.modbus._transport import FailKind, ModbusFailure


@pytest.mark.parametrize(
    ("text", "units"),
    [("1-3", [1, 2, 3]), ("5", [5]), ("1,3,2-4", [1, 3, 2, 4]), (" 7 , 9-10 ", [7, 9, 10]), ("0-1", [0, 1])],
)
def test_parse_units(text: str, units: list[int]) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize(
    ("text", "lowest", "message"),
    [
        ("", 0, "none given"),
        ("a-3", 0, "'a-3' is not a number or a range"),
        ("5-2", 0, "within 0..255, low to high"),
        ("250-256", 0, "within 0..255"),
        ("0-3", 1, "0 is the broadcast id"),
    ],
)
def test_parse_units_errors(text: str, lowest: int, message: str) -> None:
    with pytest.raises(ScanError, match=message):
        parse_units(text, lowest=lowest)


def test_settings_modbus_default_first() -> None:
    settings = serial_settings()
    assert settings[0] == Setting(19200, "E", 1)
    assert str(settings[0]) == "19200 8E1"
    assert settings[:3] == [Setting(19200, "E"), Setting(19200, "N"), Setting(19200, "O")]
    assert len(settings) == len(BAUD_RATES) * 3
    assert serial_settings([9600], ["N"], 2) == [Setting(9600, "N", 2)]
    with pytest.raises(ScanError, match="parity: 'X' must be N, E or O"):
        serial_settings([9600], ["X"])


class _Bus:
    """Units that answer only at their own setting (what a real bus does at a wrong baud rate)."""

    def __init__(self, units: dict[int, Setting], *, error_at: Setting | None = None) -> None:
        self.units = units
        self.error_at = error_at
        self.tried: list[Setting] = []

    async def line(self, setting: Setting, units: Sequence[int]) -> ScanLine:
        self.tried.append(setting)
        line = ScanLine("/dev/ttyUSB0", setting, asked=len(units))
        if setting == self.error_at:
            line.error = "cannot connect to /dev/ttyUSB0: busy"
            return line
        for u in units:
            if self.units.get(u) == setting:
                line.units.append(UnitAnswer(u, "holding 0 = 1"))
            elif u in self.units:
                line.garbled += 1
        return line


async def test_search_stops_at_the_first_setting_with_answers() -> None:
    bus = _Bus({3: Setting(9600, "N"), 7: Setting(9600, "N")})
    settings = serial_settings([19200, 9600, 38400], ["E", "N"])
    lines = await search(settings, range(1, 11), bus.line)
    assert bus.tried == [Setting(19200, "E"), Setting(19200, "N"), Setting(9600, "E"), Setting(9600, "N")]
    assert [u.unit for u in lines[-1].units] == [3, 7]
    assert lines[0].garbled == 2  # the units are there, at another setting


async def test_search_every_setting_finds_a_unit_set_differently() -> None:
    bus = _Bus({3: Setting(9600, "N"), 9: Setting(38400, "E")})
    settings = serial_settings([19200, 9600, 38400], ["E", "N"])
    lines = await search(settings, range(1, 11), bus.line, every_setting=True)
    assert len(lines) == len(settings)
    found = {str(line.setting): [u.unit for u in line.units] for line in lines if line.units}
    assert found == {"9600 8N1": [3], "38400 8E1": [9]}


async def test_search_stops_when_the_port_cannot_be_opened() -> None:
    bus = _Bus({}, error_at=Setting(19200, "E"))
    lines = await search(serial_settings([19200, 9600], ["E"]), [1], bus.line, every_setting=True)
    assert len(lines) == 1
    assert lines[0].error.endswith("busy")


async def test_search_nothing_answers() -> None:
    bus = _Bus({})
    settings = serial_settings([19200, 9600], ["E", "N"])
    lines = await search(settings, [1, 2], bus.line)
    assert len(lines) == 4
    assert not any(line.units for line in lines)


def test_what_counts_as_an_answer() -> None:
    assert answer_of(None, [1234]) == "holding 0 = 1234"
    illegal = ModbusFailure(
        FailKind.EXCEPTION,
        "read holding 0+1 from unit 3: device answered exception 2 (illegal data address)",
        exception_code=2,
    )
    assert answer_of(illegal, None) == "exception 2 (illegal data address)"
    for code in (10, 11):  # a TCP gateway's own: nothing behind it answered
        gateway = ModbusFailure(FailKind.EXCEPTION, "gateway", exception_code=code)
        assert answer_of(gateway, None) is None
    assert answer_of(ModbusFailure(FailKind.TIMEOUT, "no reply"), None) is None
    assert answer_of(ModbusFailure(FailKind.PROTOCOL, "bad crc"), None) is None

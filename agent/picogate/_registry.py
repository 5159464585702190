"""The point registry: every point the gateway knows, whoever added it and whenever.

Modbus devices register their points from `gateway.yaml` at start; Pico boards, CoAP nodes and
derived points from rules add theirs at run time.  The command router validates every write
against this registry; the rule compiler checks `device.point` references against it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from picogate._errors import PicogateError
from picogate._model import PointInfo, check_name


class DeviceState(enum.StrEnum):
    UNKNOWN = "unknown"  # not polled yet
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class DeviceStatus:
    name: str
    state: DeviceState = DeviceState.UNKNOWN
    reason: str = ""
    since_ns: int = 0
    origin: str = ""


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    kind: str  # "point_added", "point_removed", "device_state"
    device: str
    point: str = ""


Listener = Callable[[RegistryEvent], None]


class UnknownPointError(PicogateError, KeyError):
    def __init__(self, device: str, point: str) -> None:
        super().__init__(f"{device}.{point}", where=f"{device}.{point}")
        self.device = device
        self.point = point


@dataclass(slots=True)
class PointRegistry:
    """Points by `(device, name)`, and the online/offline state of each device."""

    _points: dict[tuple[str, str], PointInfo] = field(default_factory=dict)
    _devices: dict[str, DeviceStatus] = field(default_factory=dict)
    _listeners: list[Listener] = field(default_factory=list)
    _addresses: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def add(self, info: PointInfo, *, replace: bool = False) -> None:
        """Add a point; a second point of the same name is an error unless `replace`."""
        check_name("device", info.device)
        check_name("point", info.name)
        key = (info.device, info.name)
        existing = self._points.get(key)
        if existing is not None and not replace and existing != info:
            raise ValueError(f"point {info.key} is already defined (by {existing.origin or 'config'})")
        self._points[key] = info
        self._devices.setdefault(info.device, DeviceStatus(info.device, origin=info.origin))
        self._notify(RegistryEvent("point_added", info.device, info.name))

    def remove(self, device: str, point: str) -> None:
        if self._points.pop((device, point), None) is not None:
            self._notify(RegistryEvent("point_removed", device, point))
            if not any(d == device for d, _ in self._points):
                self._devices.pop(device, None)

    def get(self, device: str, point: str) -> PointInfo:
        try:
            return self._points[(device, point)]
        except KeyError:
            raise UnknownPointError(device, point) from None

    def find(self, device: str, point: str) -> PointInfo | None:
        return self._points.get((device, point))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._points

    def __iter__(self) -> Iterator[PointInfo]:
        return iter(list(self._points.values()))

    def __len__(self) -> int:
        return len(self._points)

    def keys(self) -> list[str]:
        """All `device.point` names, for suggestions in error messages."""
        return [p.key for p in self._points.values()]

    def points_of(self, device: str) -> list[PointInfo]:
        return [p for (d, _), p in self._points.items() if d == device]

    # ------------------------------------------------------------------ devices

    def devices(self) -> list[DeviceStatus]:
        return list(self._devices.values())

    def device(self, name: str) -> DeviceStatus | None:
        return self._devices.get(name)

    def set_device_state(self, name: str, state: DeviceState, *, reason: str = "", ts: int = 0) -> bool:
        """Record a device's state; returns True when it changed."""
        status = self._devices.setdefault(name, DeviceStatus(name))
        if status.state is state and status.reason == reason:
            return False
        changed = status.state is not state
        status.state, status.reason = state, reason
        if changed:
            status.since_ns = ts
            self._notify(RegistryEvent("device_state", name))
        return changed

    def set_device_address(self, name: str, protocols: dict[str, dict[str, str]]) -> None:
        """How the device is reached, by protocol, as its source knows it (for information: EdgeX
        registers it as the device's `protocols`)."""
        self._addresses[name] = protocols

    def device_address(self, name: str) -> dict[str, dict[str, str]] | None:
        return self._addresses.get(name)

    # ------------------------------------------------------------------ listeners

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, event: RegistryEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

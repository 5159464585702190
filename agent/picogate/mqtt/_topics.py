"""The MQTT topic map (docs/mqtt.md).  Every device or point name sits below a fixed system level
(`data/`, `devices/`, `cmd/`), so no name can collide with a system topic such as `status`."""

from __future__ import annotations

from dataclasses import dataclass

from picogate._model import NAME_RE


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    gateway: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def device_status(self, device: str) -> str:
        return f"{self.root}/devices/{device}/status"

    def data_point(self, device: str, point: str) -> str:
        return f"{self.root}/data/{device}/{point}"

    def data_device(self, device: str) -> str:
        return f"{self.root}/data/{device}"

    def cmd_set(self, device: str, point: str) -> str:
        return f"{self.root}/cmd/{device}/{point}/set"

    def cmd_result(self, device: str, point: str) -> str:
        return f"{self.root}/cmd/{device}/{point}/result"

    @property
    def cmd_filter(self) -> str:
        return f"{self.root}/cmd/+/+/set"

    @property
    def alerts(self) -> str:
        return f"{self.root}/alerts"

    @property
    def rules_status(self) -> str:
        return f"{self.root}/rules/status"

    def parse_cmd(self, topic: str) -> tuple[str, str] | None:
        """`<root>/cmd/<device>/<point>/set` → (device, point); None for anything else."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix) or not topic.endswith("/set"):
            return None
        parts = topic[len(prefix) : -len("/set")].split("/")
        if len(parts) != 2:
            return None
        return parts[0], parts[1]


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))

"""Installing the gateway: `picogate service install|status` (the systemd unit, the udev rules, a
default configuration, the service user and its groups; docs/operations.md) and shell completion
(`picogate completion bash|zsh`).  Importing the package costs nothing: the handlers import what
they use."""

from picogate.install._cli import add_commands

__all__ = ["add_commands"]

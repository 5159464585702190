"""`picogate demo`: a simulated plant (Modbus TCP and RTU), a private MQTT broker and the gateway
between them, with a live terminal view.  `make run` starts it."""

from picogate.demo._run import run_demo

__all__ = ["run_demo"]

"""The gateway as a library: its configuration, composed from every plug-in's section, and the
`Gateway` that runs it.

    from picogate.gateway import Gateway, load_config

    async with Gateway(load_config("/etc/picogate/gateway.yaml")) as gw:
        await gw.run()
"""

from picogate._declared import declared_points
from picogate._gateway import Gateway
from picogate._plugins import PLUGINS, GatewayConfig, load_config, parse_config

__all__ = ["PLUGINS", "Gateway", "GatewayConfig", "declared_points", "load_config", "parse_config"]

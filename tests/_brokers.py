"""The MQTT brokers of the broker matrix (tests/integration/test_mqtt_brokers.py), each a real
process on free 127.0.0.1 ports, installed by tools/bootstrap.sh:

- mosquitto 2.0 (Debian), with a password file, a TLS listener and a TLS listener that requires
  a client certificate (its CN is the user name), and optional extra lines (tight limits);
- RabbitMQ 3.10 (Debian's rabbitmq-server) with its MQTT plugin: a node of our own (name, ports,
  data, logs and Erlang cookie in a temp dir; its port mapper, epmd, on a port of its own bound to
  127.0.0.1), users made with rabbitmqctl, TLS with certificate login;
- amqtt (PyPI, in .venv), with a password file (argon2) and a TLS listener;
- aedes (npm, .brokers/aedes), with a user and a TLS listener (tests/brokers/aedes/broker.mjs).

Every broker has the user `gateway` (password `secret`); those with `cert_user` also accept the
client certificate `client.crt`/`client.key` (CN `pg-cert`) made by `make_client_cert`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _peers import (
    LOOPBACK,
    MosquittoBroker,
    PeerError,
    _die_with_parent,
    _tail,
    free_port,
    mosquitto_binary,
    port_accepts,
)

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "gateway", "secret"
CERT_USER = "pg-cert"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
AEDES_MODULES = ROOT / ".brokers" / "aedes" / "node_modules"


def make_client_cert(certs: Path, cn: str = CERT_USER) -> Path:
    """client.crt/client.key signed by the test CA in `certs` (see _peers.make_test_certs)."""
    if (certs / "client.crt").exists():
        return certs

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True, timeout=60)

    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", "client.key",
            "-out", "client.csr")  # fmt: skip
    (certs / "client-ext.cnf").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "client-ext.cnf", "-out", "client.crt")  # fmt: skip
    return certs


@dataclass
class Broker:
    """What a matrix test needs to know about a running broker."""

    name: str
    version: str
    port: int
    protocols: tuple[str, ...]  # the MQTT versions it speaks
    tls_port: int | None = None
    cert_port: int | None = None  # TLS with a client certificate as the login
    host: str = LOOPBACK
    notes: dict[str, object] = field(default_factory=dict)


class _Child:
    """A broker process: its output in a log file; SIGTERM, then SIGKILL, at stop."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,  # aedes ends when it closes
            stdout=self._log,
            stderr=self._log,
            env=env,
            preexec_fn=_die_with_parent,
        )

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_accepts(LOOPBACK, port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                raise PeerError(
                    f"{self.name} not listening on {port} within {timeout:g} s (exit code {code}); "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._log.close()


# --------------------------------------------------------------------------------------------------
# mosquitto
# --------------------------------------------------------------------------------------------------


class SecureMosquitto(MosquittoBroker):
    """mosquitto with users only (no anonymous access), a TLS listener and a TLS listener where
    the client certificate's CN is the user name."""

    def __init__(self, workdir: Path, certs: Path, extra_config: list[str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.passwd = workdir / "passwd"
        self.passwd.write_text("")
        subprocess.run(["mosquitto_passwd", "-b", str(self.passwd), USER, PASSWORD], check=True, timeout=30)
        self.tls_port = free_port()
        self.cert_port = free_port()
        super().__init__(workdir, extra_config=extra_config or [])

    def _config(self, extra: list[str]) -> str:
        tls = [f"cafile {self.certs / 'ca.crt'}", f"certfile {self.certs / 'server.crt'}",
               f"keyfile {self.certs / 'server.key'}"]  # fmt: skip
        lines = [
            "per_listener_settings true",
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            f"listener {self.tls_port} {LOOPBACK}",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            *tls,
            f"listener {self.cert_port} {LOOPBACK}",
            "allow_anonymous false",
            *tls,
            "require_certificate true",
            "use_identity_as_username true",
            "max_queued_messages 0",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join([*lines, *extra, ""])


def mosquitto_version() -> str:
    out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=10).stdout
    return out.split("version", 1)[1].split()[0] if "version" in out else "?"


# --------------------------------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------------------------------


def rabbitmq_available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists()


class RabbitNode:
    """A RabbitMQ node of our own with the MQTT plugin; ~10 s to start, so one per test session."""

    def __init__(self, workdir: Path, certs: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        self.node = f"pgtest{os.getpid()}@localhost"
        self.epmd_port, dist_port = free_port(), free_port()
        conf = workdir / "rabbitmq.conf"
        conf.write_text(
            "\n".join(
                [
                    "listeners.tcp = none",  # no AMQP: MQTT only
                    f"mqtt.listeners.tcp.default = {LOOPBACK}:{self.port}",
                    f"mqtt.listeners.ssl.default = {LOOPBACK}:{self.tls_port}",
                    f"ssl_options.cacertfile = {certs / 'ca.crt'}",
                    f"ssl_options.certfile = {certs / 'server.crt'}",
                    f"ssl_options.keyfile = {certs / 'server.key'}",
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = false",
                    "mqtt.ssl_cert_login = true",
                    "ssl_cert_login_from = common_name",
                    "mqtt.allow_anonymous = false",
                    "loopback_users = none",
                    "log.console = true",
                    "log.console.level = info",
                    "log.file = false",
                    "",
                ]
            )
        )
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (workdir / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(workdir),  # the Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbit.pid"),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
        }
        self._child: _Child | None = None

    def start(self, timeout: float = 90.0) -> RabbitNode:
        self._child = _Child(
            "rabbitmq", [str(RABBIT_BIN / "rabbitmq-server")], self.workdir / "rabbitmq.log", self.env
        )
        self._child.wait_port(self.port, timeout)
        self.ctl("add_user", USER, PASSWORD)
        self.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        self.ctl("add_user", CERT_USER, os.urandom(8).hex())
        self.ctl("set_permissions", "-p", "/", CERT_USER, ".*", ".*", ".*")
        return self

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise PeerError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out.stdout

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(30)
            self._child = None
        # the port mapper that the node started on its own port, and only that one
        subprocess.run(
            [shutil.which("epmd") or "/usr/bin/epmd", "-port", str(self.epmd_port), "-kill"],
            env=self.env,
            capture_output=True,
            timeout=10,
            check=False,
        )

    def log_text(self) -> str:
        return (self.workdir / "rabbitmq.log").read_text(errors="replace")


def rabbitmq_version() -> str:
    found = sorted(p.name for p in Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*"))
    return found[-1].removeprefix("rabbitmq_server-") if found else "?"


# --------------------------------------------------------------------------------------------------
# amqtt
# --------------------------------------------------------------------------------------------------


def amqtt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("amqtt")
    except Exception:
        return None


class AmqttBroker:
    def __init__(self, workdir: Path, certs: Path) -> None:
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher

        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port, self.tls_port = free_port(), free_port()
        passwd = workdir / "passwd"
        passwd.write_text(f"{USER}:{PasswordHash((Argon2Hasher(),)).hash(PASSWORD)}\n")
        (workdir / "amqtt.yaml").write_text(
            f"""listeners:
  default:
    type: tcp
    bind: {LOOPBACK}:{self.port}
  tls:
    type: tcp
    bind: {LOOPBACK}:{self.tls_port}
    ssl: true
    certfile: {certs / "server.crt"}
    keyfile: {certs / "server.key"}
plugins:
  amqtt.plugins.authentication.FileAuthPlugin:
    password_file: {passwd}
"""
        )
        self._child: _Child | None = None

    def start(self, timeout: float = 30.0) -> AmqttBroker:
        amqtt = Path(sys.executable).with_name("amqtt")
        self._child = _Child(
            "amqtt", [str(amqtt), "-c", str(self.workdir / "amqtt.yaml")], self.workdir / "amqtt.log"
        )
        self._child.wait_port(self.port, timeout)
        self._child.wait_port(self.tls_port, timeout)
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def log_text(self) -> str:
        return (self.workdir / "amqtt.log").read_text(errors="replace")


# --------------------------------------------------------------------------------------------------
# aedes
# --------------------------------------------------------------------------------------------------


def aedes_version() -> str | None:
    import json

    package = AEDES_MODULES / "aedes" / "package.json"
    if not package.exists() or shutil.which("node") is None:
        return None
    version: str = json.loads(package.read_text())["version"]
    return version


class AedesBroker:
    def __init__(self, workdir: Path, certs: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.certs = certs
        self.port, self.tls_port = free_port(), free_port()
        self._child: _Child | None = None

    def start(self, timeout: float = 30.0) -> AedesBroker:
        argv = [shutil.which("node") or "node", str(ROOT / "tests" / "brokers" / "aedes" / "broker.mjs")]
        argv += [str(AEDES_MODULES), str(self.port), "--user", f"{USER}:{PASSWORD}"]
        argv += ["--tls-port", str(self.tls_port), "--cert", str(self.certs / "server.crt")]
        argv += ["--key", str(self.certs / "server.key")]
        self._child = _Child("aedes", argv, self.workdir / "aedes.log")
        self._child.wait_port(self.port, timeout)
        self._child.wait_port(self.tls_port, timeout)
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

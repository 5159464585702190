"""The operator console's endpoints (docs/console.md) on a running gateway with real peers (a
pymodbus device, mosquitto, rule files): login, sessions, CSRF, the login limit, roles on every
endpoint, alarms acknowledged and their history across a restart, trends, the rule editor's
check, replay and save, the live stream, TLS, and the refusal to start beyond loopback without an
engineer.  Bad input gets a clear JSON error, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from _agent import base_config
from _peers import free_port, make_test_certs
from picogate._gateway import Gateway
from picogate.console import ConsoleSetupError, Role, Users
from picogate.gateway import GatewayConfig

API = "/api/v1"
CON = "/console/api"
PASSWORDS = {"eng": "engineer-pass", "op": "operator-pass", "view": "viewer-pass"}

RULES = (
    "RULE overheat\n"
    "  ON boiler.temp > 85\n"
    "  CLEAR boiler.temp < 80\n"
    '  THEN alert("Boiler at {boiler.temp} °C", severity="critical")\n'
    "END\n"
)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One users file (argon2 hashing takes a while), copied into each test's directory."""
    path = tmp_path_factory.mktemp("users") / "users.json"
    users = Users(path)
    users.add("eng", Role.ENGINEER, PASSWORDS["eng"])
    users.add("op", Role.OPERATOR, PASSWORDS["op"])
    users.add("view", Role.VIEWER, PASSWORDS["view"])
    return path


def config(
    tmp_path: Path, users: Path, broker: int, device: int, http: int, **console: Any
) -> dict[str, Any]:
    rules_dir = tmp_path / "rules"
    if not rules_dir.exists():
        rules_dir.mkdir()
        (rules_dir / "boiler.rules").write_text(RULES, encoding="utf-8")
    mine = tmp_path / "users.json"
    if not mine.exists():
        shutil.copy(users, mine)
    boiler = {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": device,
        "poll": "100ms",
        "timeout": "500ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 90},
        ],
    }
    return base_config(
        tmp_path,
        broker,
        [boiler],
        metrics={"enabled": True, "host": "127.0.0.1", "port": http},
        rules={"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms"},
        console={"users": str(mine), "trend": {"step": "1s"}, **console},
    )


@contextlib.asynccontextmanager
async def gateway(cfg: dict[str, Any]) -> AsyncIterator[Gateway]:
    gw = Gateway(GatewayConfig.model_validate(cfg), drain_timeout=5)
    async with gw:
        task = asyncio.create_task(gw.run(install_signals=False))
        async with asyncio.timeout(10):
            await gw.ready.wait()
        try:
            yield gw
        finally:
            gw.stop()
            async with asyncio.timeout(15):
                await task


class Client:
    """One browser: a cookie jar, and the CSRF token of its login."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http
        self.csrf = ""

    async def login(self, user: str, password: str | None = None) -> tuple[int, Any]:
        status, body = await self.call(
            "POST", f"{CON}/login", {"user": user, "password": password or PASSWORDS[user]}
        )
        if status == 200:
            self.csrf = body["csrf"]
        return status, body

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf} if self.csrf and method != "GET" else {}
        async with self.http.request(method, self.url + path, json=body, headers=headers, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.text()


@contextlib.asynccontextmanager
async def browser(url: str) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Client(url, http)


@pytest.fixture
async def plant(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, users_file: Path
) -> AsyncIterator[tuple[Any, Gateway, str, Callable[..., dict[str, Any]]]]:
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    port = free_port()

    def make(**console: Any) -> dict[str, Any]:
        return config(tmp_path, users_file, mosquitto.port, dev.port, port, **console)

    async with gateway(make()) as gw:
        url = f"http://127.0.0.1:{port}"
        async with browser(url) as b:
            await b.login("view")
            await until(b, f"{API}/points/boiler.temp", lambda p: p["value"] == 20)
        yield dev, gw, url, make


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def until(b: Client, path: str, pred: Callable[[Any], bool], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        status, body = await b.call("GET", path)
        if status == 200 and pred(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: still {status} {body}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- who is asking


async def test_login_session_csrf_logout(plant: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, _, url, _ = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    async with browser(url) as b:
        status, body = await b.call("GET", f"{API}/points")
        assert status == 401
        assert body["code"] == "unauthorized"
        status, page = await b.call("GET", "/console/")
        assert status == 200
        assert "Picogate console" in page
        async with b.http.get(url + "/metrics") as r:
            assert r.status == 200  # Prometheus scrapes as before
        assert (await b.call("GET", "/console/static/nope.js"))[0] == 404
        status, body = await b.login("op", "wrong password")
        assert status == 401
        assert body["error"] == "wrong user name or password"
        assert "login failed for 'op' from 127.0.0.1: wrong password" in caplog.text
        status, body = await b.call("POST", f"{CON}/login", {"user": "op"})
        assert status == 400
        assert "password" in body["error"]
        async with b.http.post(
            url + f"{CON}/login", data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
        async with b.http.post(
            url + f"{CON}/login", data=b'{"user": "op", "password": "operator-pass"}'
        ) as r:
            assert r.status == 415  # what a form of another site could send
        status, body = await b.login("op")
        assert status == 200
        assert body["role"] == "operator"
        assert "login op (operator) from 127.0.0.1" in caplog.text
        assert (await b.call("GET", f"{API}/points"))[0] == 200
        assert (await b.call("GET", f"{CON}/session"))[1]["user"] == "op"
        csrf, b.csrf = b.csrf, ""
        status, body = await b.call("POST", f"{CON}/logout", {})
        assert status == 403
        assert body["code"] == "csrf"
        b.csrf = csrf
        assert (await b.call("POST", f"{CON}/logout", {}))[0] == 200
        assert (await b.call("GET", f"{API}/points"))[0] == 401
    # HTTP Basic for scripts, against the same users
    async with aiohttp.ClientSession() as http:
        async with http.get(url + f"{API}/points", headers=basic("view", PASSWORDS["view"])) as r:
            assert r.status == 200
        async with http.get(url + f"{API}/points", headers=basic("view", "nope")) as r:
            assert r.status == 401
        async with http.get(url + f"{API}/points", headers={"Authorization": "Basic !!!"}) as r:
            assert r.status == 400


async def test_picogate_write_and_watch_log_in_from_the_environment(
    plant: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from picogate.cli import main

    dev, _, url, _ = plant
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert await asyncio.to_thread(main, ["write", "boiler.setpoint", "61", "--url", url]) != 0
        assert "log in first" in capsys.readouterr().err
        monkeypatch.setenv("PICOGATE_USER", "op")
        monkeypatch.setenv("PICOGATE_PASSWORD", PASSWORDS["op"])
        assert await asyncio.to_thread(main, ["write", "boiler.setpoint", "61", "--url", url]) == 0
        assert dev.get_holding(1, 1) == [61]
        assert await asyncio.to_thread(main, ["watch", "--once", "--url", url]) == 0
        assert "console:op" in capsys.readouterr().out  # the last write, by its user
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_failed_logins_are_rate_limited(plant: Any) -> None:
    _, _, url, _ = plant
    async with browser(url) as b:
        for _ in range(5):
            assert (await b.login("eng", "not the password"))[0] == 401
        status, body = await b.login("eng")  # even the right password, for now
        assert status == 429
        assert "try again in" in body["error"]


async def test_a_removed_user_loses_the_session(plant: Any) -> None:
    _, _gw, url, make = plant
    users = Users(Path(make()["console"]["users"]))
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the second from the cache of verified credentials
            async with http.get(url + f"{API}/points", headers=basic("op", PASSWORDS["op"])) as r:
                assert r.status == 200
        users.set_password("op", "a new password")
        async with http.get(url + f"{API}/points", headers=basic("op", PASSWORDS["op"])) as r:
            assert r.status == 401  # the old password no longer counts, cached or not
    async with browser(url) as b:
        await b.login("view")
        users.remove("view")
        status, body = await b.call("GET", f"{API}/points")
        assert status == 401
        assert "log in again" in body["error"]


async def test_roles_decide_who_writes_acknowledges_and_edits(
    plant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dev, _, url, _ = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    write = {"device": "boiler", "point": "setpoint", "value": 60}
    async with browser(url) as viewer, browser(url) as op:
        await viewer.login("view")
        await op.login("op")
        status, body = await viewer.call("POST", f"{API}/writes", write)
        assert status == 403
        assert "view is a viewer; writing needs an operator" in body["error"]
        assert dev.get_holding(1, 1) == [50]
        status, body = await op.call("POST", f"{API}/writes", write)
        assert status == 200
        assert body["code"] == "ok"
        assert body["origin"] == "console:op"
        assert "write boiler.setpoint=60 by console:op" in caplog.text  # the audit line names the user
        assert dev.get_holding(1, 1) == [60]
        status, body = await viewer.call("POST", f"{CON}/alarms/abc/ack", {})
        assert status == 403
        assert "needs an operator" in body["error"]
        status, body = await op.call("POST", f"{CON}/rules/check", {"name": "boiler.rules", "text": RULES})
        assert status == 403
        assert "needs an engineer" in body["error"]
        status, body = await viewer.call("GET", f"{CON}/rules/file?name=boiler.rules")
        assert status == 200
        assert body["text"] == RULES


ENDPOINTS = [
    ("GET", f"{CON}/alarms"),
    ("POST", f"{CON}/alarms/abc/ack"),
    ("GET", f"{CON}/trend?point=boiler.temp"),
    ("GET", f"{CON}/rules/files"),
    ("GET", f"{CON}/rules/file?name=boiler.rules"),
    ("POST", f"{CON}/rules/check"),
    ("POST", f"{CON}/rules/replay"),
    ("PUT", f"{CON}/rules/file"),
    ("GET", f"{API}/events"),
    ("POST", f"{CON}/logout"),
    ("GET", f"{API}/snapshot"),
    ("POST", f"{API}/writes"),
]


async def test_every_endpoint_needs_a_user_and_its_role(plant: Any) -> None:
    _, _, url, _ = plant
    async with browser(url) as anyone:
        for method, path in ENDPOINTS:
            status, body = await anyone.call(method, path, {})
            assert status == 401, (method, path)
            assert body["code"] == "unauthorized"
        assert (await anyone.call("GET", f"{CON}/session"))[0] == 401
    async with browser(url) as viewer:
        await viewer.login("view")
        for path in ("rules/check", "rules/replay"):
            status, body = await viewer.call("POST", f"{CON}/{path}", {"name": "boiler.rules", "text": RULES})
            assert status == 403, path
            assert "needs an engineer" in body["error"]
        status, body = await viewer.call("PUT", f"{CON}/rules/file", {"name": "boiler.rules", "text": RULES})
        assert status == 403


async def test_bad_input_gets_a_clear_answer(plant: Any) -> None:
    _, _, url, _ = plant
    async with browser(url) as eng:
        await eng.login("eng")
        cases: list[tuple[str, str, Any, int, str]] = [
            ("GET", f"{CON}/trend?point=boiler.temp&since=yesterday", None, 400, "milliseconds"),
            ("GET", f"{CON}/trend", None, 404, "device.point"),
            ("GET", f"{CON}/rules/file?name=nope.rules", None, 404, "no rule file 'nope.rules'"),
            ("GET", f"{CON}/rules/file?name=../x.rules", None, 400, "not a rule file name"),
            ("POST", f"{CON}/rules/check", ["a", "list"], 400, '"name": "boiler.rules"'),
            ("POST", f"{CON}/rules/check", {"name": "boiler.rules", "text": "x" * 1_100_000}, 413, "at most"),
            ("POST", f"{CON}/rules/replay", {"name": "boiler.rules", "text": RULES, "csv": 5}, 400, "csv"),
            ("POST", f"{CON}/alarms/abc/ack", {}, 404, "no active alarm"),
        ]
        for method, path, body, want, text in cases:
            status, answer = await eng.call(method, path, body)
            assert status == want, (path, str(answer)[:200])
            assert isinstance(answer, dict), (path, str(answer)[:200])
            assert text in answer["error"], (path, str(answer)[:200])
        async with eng.http.post(
            url + f"{CON}/rules/check", data=b"\xff not json", headers={"X-CSRF-Token": eng.csrf}
        ) as r:
            assert r.status == 400
        status, answer = await eng.call("GET", "/console/static/../../etc/passwd")
        assert status == 404
        # a rule file larger than the server's 64 KiB bound for other requests is checked all the same
        big = RULES + "# " + "x" * 100_000 + "\n"
        status, answer = await eng.call("POST", f"{CON}/rules/check", {"name": "boiler.rules", "text": big})
        assert status == 200
        assert answer["ok"]


# ---------------------------------------------------------------------------- alarms


async def test_alarm_acknowledged_and_history_survive_a_restart(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, users_file: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [90, 50]}})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = config(tmp_path, users_file, mosquitto.port, dev.port, port)
    async with gateway(cfg), browser(url) as op:
        await op.login("op")
        body = await until(op, f"{CON}/alarms", lambda b: len(b["active"]) == 1)
        [alarm] = body["active"]
        assert alarm["rule"] == "overheat"
        assert alarm["name"] == "overheat"
        assert alarm["severity"] == "critical"
        assert alarm["message"] == "Boiler at 90 °C"
        assert alarm["file"] == "boiler.rules"
        assert alarm["line"] == 1
        assert "ON boiler.temp > 85" in alarm["text"]
        assert not alarm["acknowledged"]
        status, body = await op.call("POST", f"{CON}/alarms/{alarm['id']}/ack", {})
        assert status == 200
        assert body["acked_by"] == "op"
        status, body = await op.call("POST", f"{CON}/alarms/000000000000/ack", {})
        assert status == 404
        assert "no active alarm" in body["error"]
        status, body = await op.call("GET", f"{CON}/alarms?history=x")
        assert status == 400
    # a new gateway on the same data directory: the rule raises the alarm again
    async with gateway(cfg), browser(url) as view:
        await view.login("view")
        body = await until(view, f"{CON}/alarms", lambda b: len(b["active"]) == 1)
        assert body["active"][0]["acked_by"] == "op"  # the acknowledgement came back
        events = [h["event"] for h in reversed(body["history"])]
        assert events[:2] == ["raised", "acked"]
        assert events[-1] == "raised"
        dev.set_holding(1, 0, 70)
        body = await until(view, f"{CON}/alarms", lambda b: not b["active"])
        assert body["history"][0]["event"] == "cleared"
    assert (tmp_path / "data" / "alarms.jsonl").exists()


# ---------------------------------------------------------------------------- trends


async def test_trend_of_a_point(plant: Any) -> None:
    dev, _, url, _ = plant
    async with browser(url) as b:
        await b.login("view")
        await until(b, f"{CON}/trend?point=boiler.temp", lambda t: len(t["samples"]) >= 1)
        dev.set_holding(1, 0, 25)
        body = await until(b, f"{CON}/trend?point=boiler.temp", lambda t: t["samples"][-1][1] == 25, within=5)
        assert body["unit"] == "°C"
        assert body["step_s"] == 1
        status, body = await b.call("GET", f"{CON}/trend?point=boiler.nope")
        assert status == 404
        assert "device.point" in body["error"]


# ---------------------------------------------------------------------------- the rule editor


BROKEN = RULES.replace("boiler.temp > 85", "boiler.tmp > 85")
HOTTER = RULES.replace("boiler.temp > 85", "boiler.temp > 22").replace("boiler.temp < 80", "boiler.temp < 21")


async def test_rule_editor_check_replay_save(
    plant: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dev, _, url, _ = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    path = tmp_path / "rules" / "boiler.rules"
    async with browser(url) as eng:
        await eng.login("eng")
        status, body = await eng.call("GET", f"{CON}/rules/files")
        assert status == 200
        assert body["files"] == ["boiler.rules"]
        status, body = await eng.call("POST", f"{CON}/rules/check", {"name": "boiler.rules", "text": BROKEN})
        assert status == 200
        assert not body["ok"]
        [error] = body["errors"]
        assert (error["file"], error["line"], error["col"]) == ("boiler.rules", 2, 6)
        assert error["suggestion"] == "boiler.temp"
        assert error["message"] == "device 'boiler' has no point 'tmp'"
        status, body = await eng.call("POST", f"{CON}/rules/check", {"name": "boiler.rules", "text": HOTTER})
        assert status == 200
        assert body["ok"]
        assert body["rules"] == 1
        # replay on the gateway's recent history (the trend rings: temp 20)
        await until(eng, f"{CON}/trend?point=boiler.temp", lambda t: len(t["samples"]) >= 1)
        status, body = await eng.call("POST", f"{CON}/rules/replay", {"name": "boiler.rules", "text": HOTTER})
        assert status == 200
        assert body["source"] == "history"
        assert body["readings"] >= 1
        assert body["lines"] == []  # 20 °C: nothing fires
        csv = "ts,device,point,value\n0,boiler,temp,20\n10,boiler,temp,23\n20,boiler,temp,20\n"
        status, body = await eng.call(
            "POST", f"{CON}/rules/replay", {"name": "boiler.rules", "text": HOTTER, "csv": csv}
        )
        assert status == 200
        assert body["source"] == "csv"
        assert body["readings"] == 3
        whats = [line["what"] for line in body["lines"]]
        assert "fired" in whats
        assert "alert active critical: Boiler at 23 °C" in whats
        assert "cleared" in whats
        status, body = await eng.call(
            "POST", f"{CON}/rules/replay", {"name": "boiler.rules", "text": HOTTER, "csv": "x,y\n"}
        )
        assert status == 400
        assert body["code"] == "bad_csv"
        assert "the CSV" in body["error"]
        status, body = await eng.call("POST", f"{CON}/rules/replay", {"name": "boiler.rules", "text": BROKEN})
        assert status == 422
        assert body["errors"][0]["line"] == 2
        # save: a file with errors is never written
        status, body = await eng.call("PUT", f"{CON}/rules/file", {"name": "boiler.rules", "text": BROKEN})
        assert status == 422
        assert "not saved" in body["error"]
        assert path.read_text(encoding="utf-8") == RULES
        for bad in ("../boiler.rules", ".hidden.rules", "boiler.txt", "/etc/passwd"):
            status, body = await eng.call("PUT", f"{CON}/rules/file", {"name": bad, "text": HOTTER})
            assert status == 400, bad
            assert "not a rule file name" in body["error"]
        status, body = await eng.call("PUT", f"{CON}/rules/file", {"name": "boiler.rules"})
        assert status == 400
        status, body = await eng.call("PUT", f"{CON}/rules/file", {"name": "boiler.rules", "text": HOTTER})
        assert status == 200
        assert body["saved"] == "boiler.rules"
        assert path.read_text(encoding="utf-8") == HOTTER
        assert "rule file boiler.rules saved by eng" in caplog.text
        # the normal hot reload applies it: 20 °C is now above 22? no; 25 is
        dev.set_holding(1, 0, 25)
        await until(eng, f"{CON}/alarms", lambda b: len(b["active"]) == 1)


# ---------------------------------------------------------------------------- live updates


async def test_the_page_follows_the_api_live_stream_with_its_session(plant: Any) -> None:
    dev, _, url, _ = plant
    async with browser(url) as b:
        await b.login("view")
        async with b.http.get(url + f"{API}/events?devices=boiler&interval=0.25") as stream:
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            dev.set_holding(1, 0, 31)
            seen = ""
            async with asyncio.timeout(10):
                while '"value":31' not in seen:
                    seen = (await stream.content.readline()).decode()


# ---------------------------------------------------------------------------- start-up and TLS


async def test_beyond_loopback_needs_an_engineer(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    Users(users).add("op", Role.OPERATOR, PASSWORDS["op"])
    cfg = base_config(
        tmp_path,
        free_port(),
        [],
        metrics={"enabled": True, "host": "0.0.0.0", "port": free_port()},
        console={"users": str(users)},
    )
    with pytest.raises(ConsoleSetupError, match="has no engineer: create one first with `picogate users add"):
        async with Gateway(GatewayConfig.model_validate(cfg)):
            pass


async def test_console_over_tls(
    tmp_path: Path, users_file: Path, mosquitto: Any, modbus_tcp_server: Any
) -> None:
    (tmp_path / "certs").mkdir()
    certs = make_test_certs(tmp_path / "certs")
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    port = free_port()
    cfg = config(
        tmp_path,
        users_file,
        mosquitto.port,
        dev.port,
        port,
        tls={"cert": str(certs / "server.crt"), "key": str(certs / "server.key")},
    )
    async with gateway(cfg):
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            b = Client(f"https://127.0.0.1:{port}", http)
            status, _ = await b.login("view")
            assert status == 200
            assert (await b.call("GET", f"{API}/points"))[0] == 200
    bad = config(
        tmp_path, users_file, mosquitto.port, dev.port, port, tls={"cert": "/nope.crt", "key": "/nope.key"}
    )
    with pytest.raises(ConsoleSetupError, match=r"console\.tls\.cert: /nope\.crt: no such file"):
        async with Gateway(GatewayConfig.model_validate(bad)):
            pass

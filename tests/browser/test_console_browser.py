"""The operator console in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver (/usr/bin/chromedriver: Selenium's driver manager never downloads anything),
against a running gateway with real peers (a pymodbus boiler, mosquitto, a rule file).

One gateway and one browser for the whole scenario, as an operator would go through it: log in,
see a value change live, raise and acknowledge an alarm from a rule, edit the rule to an error
and see it inline, fix it, replay it, save it and see the new rule live, write a setpoint and see
the result; then a viewer, who cannot write.  Skipped, with the reason, where chromium is absent.

`PICOGATE_SCREENSHOTS=docs` writes the screenshots of the main pages into docs/console-*.png
(the pictures of docs/console.md); otherwise into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config
from _peers import free_port
from picogate._gateway import Gateway
from picogate.console import Role, Users
from picogate.gateway import GatewayConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="no chromium/chromedriver (Debian packages chromium, chromium-driver; tools/bootstrap.sh installs them)",
    ),
    pytest.mark.timeout(240),
]
ROOT = Path(__file__).resolve().parents[2]

RULES = (
    "# The boiler's alarms\n"
    "RULE overheat\n"
    "  ON boiler.temp > 85\n"
    "  CLEAR boiler.temp < 80\n"
    '  THEN alert("Boiler at {boiler.temp} °C", severity="critical"); set(boiler.setpoint, 40)\n'
    "END\n"
)


@contextlib.contextmanager
def chrome() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                "--disable-gpu", "--no-first-run", "--lang=en-GB"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The console in the browser, with bounded waits (selenium runs in a thread: the gateway and
    the field device keep running in the test's event loop)."""

    def __init__(self, driver: Any, url: str, shots: Path) -> None:
        self.d = driver
        self.url = url
        self.shots = shots

    def el(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def wait(self, what: str, pred: Callable[[], Any], within: float = 15.0) -> Any:
        deadline = time.monotonic() + within
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = pred()
            except Exception as exc:  # an element not there yet, or replaced meanwhile
                last = exc
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last error: {last})")

    def text(self, css: str) -> str:
        return str(self.el(css).text)

    def go(self, page: str) -> None:
        self.el(f'#nav a[data-page="{page}"]').click()
        self.wait(f"page {page}", lambda: self.el(f"#{page}").is_displayed())

    def login(self, user: str, password: str) -> None:
        self.d.get(self.url + "/console/")
        self.wait("the login form", lambda: self.el("#login-user").is_displayed())
        self.el("#login-user").clear()
        self.el("#login-user").send_keys(user)
        self.el("#login-password").send_keys(password)
        self.el("#login-button").click()
        self.wait("the plant page", lambda: self.el("#plant").is_displayed())

    def cell(self, key: str, column: int) -> str:
        return str(
            self.el(f'#plant-table tr[data-key="{key}"]').find_elements("css selector", "td")[column].text
        )

    def confirm(self) -> None:
        self.wait("the confirmation", lambda: self.el("#confirm").is_displayed())
        self.el("#confirm-yes").click()

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"console-{name}.png"))

    def set_editor(self, text: str) -> None:
        self.d.execute_script("document.getElementById('editor-text').value = arguments[0];", text)


def scenario(p: Page, set_temp: Callable[[int], None], setpoint: Callable[[], int]) -> None:
    # --- log in, the plant, a value changing live
    p.login("eng", "engineer-pass")
    p.wait("boiler.temp = 20", lambda: p.cell("boiler.temp", 2) == "20")
    set_temp(21)
    p.wait("boiler.temp = 21, live", lambda: p.cell("boiler.temp", 2) == "21")
    p.el("#plant-search").send_keys("boiler")
    p.el('#plant-table tr[data-key="boiler.temp"]').click()
    p.wait("the trend", lambda: "samples" in p.text("#trend-range"))
    p.shot("plant")

    # --- an alarm raised by a rule, acknowledged
    set_temp(90)
    p.wait("the alarm badge", lambda: p.text("#alarm-count") == "1")
    p.go("alarms")
    p.wait("the active alarm", lambda: "Boiler at 90 °C" in p.text("#alarms-table"))
    row = p.text("#alarms-table tbody tr")
    assert "critical" in row.lower()
    assert "overheat" in row
    p.el("#alarms-table button.ack").click()
    p.wait("acknowledged", lambda: "eng," in p.text("#alarms-table tbody tr"))
    p.wait("history", lambda: "acked" in p.text("#history-table"))
    p.shot("alarms")
    set_temp(70)
    p.wait("the alarm cleared", lambda: p.el("#alarms-none").is_displayed())

    # --- rules with their live state
    p.go("rules")
    p.wait("the rule overheat", lambda: "overheat" in p.text("#rules-table"))
    p.wait("its write", lambda: "boiler.setpoint = 40: ok" in p.text('#rules-table tr[data-rule="overheat"]'))
    p.shot("rules")

    # --- the editor: an error shown inline, fixed, replayed, saved
    p.go("editor")
    p.wait("the rule file", lambda: "RULE overheat" in p.el("#editor-text").get_attribute("value"))
    p.set_editor(RULES.replace("boiler.temp > 85", "boiler.tmp > 60").replace("< 80", "< 55"))
    p.el("#editor-check").click()
    p.wait("the error inline", lambda: "line 3, column 6" in p.text("#editor-problems"))
    problem = p.text("#editor-problems")
    assert "did you mean boiler.temp?" in problem
    assert "ON boiler.tmp > 60" in problem
    assert p.el("#editor-gutter .bad").text == "3"  # the line is marked beside the text
    p.shot("editor")
    fixed = RULES.replace("boiler.temp > 85", "boiler.temp > 60").replace("< 80", "< 55")
    p.set_editor(fixed)
    p.el("#editor-check").click()
    p.wait("the check passes", lambda: p.text("#editor-status").startswith("OK"))
    p.el("#editor-replay").click()
    p.wait("the replay", lambda: "replayed" in p.text("#editor-status"))
    p.wait(
        "the replay fires on the last hours (90 °C, then 70 °C)", lambda: "fired" in p.text("#replay-table")
    )
    p.shot("replay")
    p.el("#editor-save").click()
    p.confirm()
    p.wait("saved", lambda: p.text("#editor-status").startswith("saved boiler.rules"))
    # the new rule live: 70 °C is above the new threshold of 60
    p.go("alarms")
    p.wait("the new rule's alarm", lambda: "Boiler at 70 °C" in p.text("#alarms-table"))
    p.go("rules")
    p.wait("the new rule, active", lambda: "boiler.temp > 60" in p.text("#rules-table"))
    p.wait("its state", lambda: "active" in p.text('#rules-table tr[data-rule="overheat"]'))

    # --- a write, confirmed, and its result
    p.go("writes")
    from selenium.webdriver.support.select import Select

    Select(p.el("#write-point")).select_by_value("boiler.setpoint")
    p.el("#write-value").send_keys("65")
    p.el("#write-button").click()
    p.confirm()
    p.wait("the write's result", lambda: p.text("#write-result") == "ok")
    p.wait("the write on the device", lambda: setpoint() == 65)
    p.wait("the write in the list", lambda: "console:eng" in p.text("#writes-table"))
    p.shot("writes")
    p.go("health")
    p.wait("the health cards", lambda: "outbox depth" in p.text("#health-cards"))
    p.shot("health")

    # --- a viewer sees, but cannot write
    p.el("#logout").click()
    p.wait("the login form", lambda: p.el("#login-form").is_displayed())
    p.login("view", "viewer-pass")
    p.go("writes")
    assert not p.el("#write-form").is_displayed()
    assert p.el("#write-viewer").is_displayed()
    status = p.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/v1/writes', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({device: 'boiler', point: 'setpoint', value: 10})}).then(r => done(r.status));"
    )
    assert status == 403  # no CSRF token, and no right to write anyway
    assert setpoint() == 65


async def test_console_in_a_browser(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "boiler.rules").write_text(RULES, encoding="utf-8")
    users = Users(tmp_path / "users.json")
    users.add("eng", Role.ENGINEER, "engineer-pass")
    users.add("view", Role.VIEWER, "viewer-pass")
    port = free_port()
    boiler = {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": dev.port,
        "poll": "200ms",
        "timeout": "500ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "unit": "°C",
             "description": "boiler water temperature"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 90,
             "unit": "°C", "description": "boiler setpoint"},
        ],
    }  # fmt: skip
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [boiler],
        metrics={"enabled": True, "host": "127.0.0.1", "port": port},
        rules={"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms"},
        console={
            "users": str(tmp_path / "users.json"),
            "trend": {"step": "1s"},
        },
    )
    shots = ROOT / "docs" if os.environ.get("PICOGATE_SCREENSHOTS") == "docs" else tmp_path
    gw = Gateway(GatewayConfig.model_validate(cfg), drain_timeout=5)
    async with gw:
        task = asyncio.create_task(gw.run(install_signals=False))
        try:
            async with asyncio.timeout(10):
                await gw.ready.wait()

            def run() -> None:
                with chrome() as driver:
                    scenario(
                        Page(driver, f"http://127.0.0.1:{port}", shots),
                        lambda v: dev.set_holding(1, 0, v),
                        lambda: dev.get_holding(1, 1)[0],
                    )

            await asyncio.to_thread(run)
        finally:
            gw.stop()
            async with asyncio.timeout(15):
                await task

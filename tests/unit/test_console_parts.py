"""The console's pure parts as data: users file, sessions, login limit, alarm book, trend rings,
and `picogate users`."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from picogate._model import Quality, Reading
from picogate.cli import main
from picogate.console._alarms import Active, AlarmBook, HistoryFile, alarm_id
from picogate.console._sessions import LoginLimiter, Sessions
from picogate.console._trend import Ring, Trends
from picogate.console._users import Role, Users, UsersError, verify_password


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------- users


def test_users_add_verify_passwd_remove(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "users.json"
    users = Users(path)
    assert users.load() == {}
    users.add("alice", Role.ENGINEER, "correct horse")
    assert os.stat(path).st_mode & 0o777 == 0o600
    alice = users.get("alice")
    assert alice is not None
    assert alice.role is Role.ENGINEER
    assert alice.hash.startswith("$argon2id$")
    assert "correct horse" not in path.read_text()
    assert verify_password(alice.hash, "correct horse")
    assert not verify_password(alice.hash, "wrong horse")
    assert not verify_password(None, "correct horse")  # no such user: still False, same work
    users.set_password("alice", "battery staple", role=Role.VIEWER)
    again = Users(path).get("alice")  # a second reader sees the change
    assert again is not None
    assert again.role is Role.VIEWER
    assert verify_password(again.hash, "battery staple")
    path.chmod(0o640)  # chosen by the operator (a group the gateway runs in): kept by a change
    users.remove("alice")
    assert Users(path).load() == {}
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_users_errors_say_what_to_do(tmp_path: Path) -> None:
    users = Users(tmp_path / "users.json")
    with pytest.raises(UsersError, match="at least 8 characters"):
        users.add("bob", Role.OPERATOR, "short")
    with pytest.raises(UsersError, match="a lower-case letter first"):
        users.add("Bob Smith", Role.OPERATOR, "long enough")
    users.add("bob", Role.OPERATOR, "long enough")
    with pytest.raises(UsersError, match="exists already"):
        users.add("bob", Role.OPERATOR, "long enough")
    with pytest.raises(UsersError, match="no user 'carol'"):
        users.remove("carol")
    bad = tmp_path / "bad.json"
    bad.write_text('{"users": {"eve": {"role": "admin", "hash": "$argon2id$x"}}}')
    with pytest.raises(UsersError, match="role must be viewer, operator or engineer"):
        Users(bad).load()
    bad.write_text("not json")
    with pytest.raises(UsersError, match="not a users file"):
        Users(bad).load()


def test_role_order() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ENGINEER
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="viewer, operator or engineer"):
        Role.parse("root")


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_restore_logging")
def test_users_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = str(tmp_path / "users.json")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["users", "add", "alice", "--role", "engineer", "-f", f, "--password-stdin"]) == 0
    assert main(["users", "list", "-f", f]) == 0
    assert "alice  engineer" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "passwd", "alice", "-f", f, "--password-stdin"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["users", "remove", "bob", "-f", f]) == 1
    assert "no user 'bob'" in capsys.readouterr().err
    # --config: the console section's file; a config without one says so
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"console:\n  users: {f}\n")
    assert main(["users", "list", "-c", str(cfg)]) == 0
    assert "alice" in capsys.readouterr().out
    cfg.write_text("gateway: {id: gw}\n")
    assert main(["users", "list", "-c", str(cfg)]) == 1
    assert "has no console section" in capsys.readouterr().err


# ---------------------------------------------------------------------------- sessions


def test_sessions_expire_when_idle_and_at_max_age() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, max_age=300, clock=clock)
    s = sessions.create("alice", Role.OPERATOR)
    assert sessions.get(s.token) is s
    clock.t += 59
    assert sessions.get(s.token) is s  # seen again: idle restarts
    clock.t += 59
    assert sessions.get(s.token) is s
    clock.t += 61
    assert sessions.get(s.token) is None  # idle too long
    s = sessions.create("alice", Role.OPERATOR)
    for _ in range(7):
        clock.t += 50
        sessions.get(s.token)
    assert sessions.get(s.token) is None  # older than max_age, though never idle
    assert sessions.get("made-up") is None
    assert sessions.get("") is None


def test_sessions_bounded_csrf_and_end_user() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, max_age=300, max_sessions=3, clock=clock)
    made = [sessions.create(f"u{i}", Role.VIEWER) for i in range(4)]
    assert len(sessions) == 3
    assert sessions.get(made[0].token) is None
    s = made[3]
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None)
    assert not s.csrf_ok(s.csrf + "x")
    assert sessions.end_user("u3") == 1
    assert sessions.get(s.token) is None


def test_login_limiter() -> None:
    clock = Clock()
    limit = LoginLimiter(burst=3, window=60, clock=clock)
    keys = ("addr:10.0.0.1", "user:alice")
    for _ in range(3):
        assert limit.wait(*keys) == 0
        limit.failed(*keys)
    assert limit.wait(*keys) == pytest.approx(60)
    assert limit.wait("user:alice") == pytest.approx(60)  # from any address
    assert limit.wait("addr:10.0.0.2", "user:bob") == 0
    clock.t += 30
    assert limit.wait(*keys) == pytest.approx(30)
    clock.t += 30
    assert limit.wait(*keys) == 0
    limit.failed(*keys)
    limit.succeeded("user:alice")
    assert limit.wait("user:alice") == 0


# ---------------------------------------------------------------------------- alarms


def _book(path: Path, clock: Clock) -> AlarmBook:
    return AlarmBook(HistoryFile(path, max_entries=100), max_entries=100, clock=lambda: int(clock.t * 1e9))


def test_alarms_ack_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    clock = Clock()
    book = _book(path, clock)
    hot = Active("boiler_hot", "high", "boiler above 90 °C", 1_000_000_000_000)
    book.event(hot.rule, hot.severity, hot.message, "active", hot.since)
    [view] = book.view([hot])
    assert view["id"] == alarm_id(hot.key)
    assert not view["acknowledged"]
    assert book.acknowledge("nope", "bob", [hot]) is None
    assert book.acknowledge(view["id"], "bob", [hot]) == hot
    clock.t += 5
    assert book.acknowledge(view["id"], "carol", [hot]) == hot  # the first acknowledgement stays
    [view] = book.view([hot])
    assert view["acked_by"] == "bob"
    assert view["acked_at"] == 1_000_000
    book.close()

    again = _book(path, clock)  # restart: the rule raises the same alert again
    [view] = again.view([hot])
    assert view["acked_by"] == "bob"
    assert [e["event"] for e in again.history] == ["raised", "acked"]
    again.event(hot.rule, hot.severity, hot.message, "cleared", hot.since + 10**9)
    assert not again.view([hot])[0]["acknowledged"]  # cleared: a new raise is a new alarm
    again.close()
    third = _book(path, clock)
    assert not third.acks
    assert [e["event"] for e in third.history] == ["raised", "acked", "cleared"]


def test_alarm_history_is_bounded_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    book = AlarmBook(HistoryFile(path, max_entries=100), max_entries=100)
    for i in range(400):
        book.event("r", "low", f"m{i}", "active", i * 10**9)
    lines = path.read_bytes().splitlines()
    assert 100 <= len(lines) <= 125
    assert orjson.loads(lines[-1])["message"] == "m399"
    book.close()
    path.write_bytes(path.read_bytes() + b'{"ts": 1, "ev')  # torn last line after a crash
    again = AlarmBook(HistoryFile(path, max_entries=100), max_entries=100)
    assert len(again.history) == 100
    assert again.history[-1]["message"] == "m399"


# ---------------------------------------------------------------------------- trends


def test_ring_wraps_oldest_first() -> None:
    ring = Ring(3)
    for i in range(5):
        ring.append(i, float(i))
    assert list(ring) == [(2, 2.0), (3, 3.0), (4, 4.0)]
    assert ring.since(3) == [(3, 3.0), (4, 4.0)]


def test_trends_sample_and_bound() -> None:
    trends = Trends(samples=10, max_points=2)
    s = 10**9
    taken = trends.sample(
        [
            Reading("b", "t", 20.5, 5 * s),
            Reading("b", "on", True, 5 * s),
            Reading("b", "name", "text", 5 * s),  # not numeric: no trend
            Reading("b", "bad", None, 5 * s, Quality.BAD),
        ]
    )
    assert taken == 2
    assert trends.sample([Reading("b", "t", 21.0, 5 * s)]) == 0  # not newer
    assert trends.sample([Reading("b", "t", 21.0, 6 * s)]) == 1
    assert trends.series("b", "t") == [(5, 20.5), (6, 21.0)]
    assert trends.series("b", "on") == [(5, 1.0)]
    assert trends.sample([Reading("c", "x", 1, 6 * s)]) == 0  # max_points reached
    assert trends.refused == 1
    assert trends.bound_bytes == 10 * 12 * 2


# ---------------------------------------------------------------------------- the rule editor's parts


async def test_trial_and_rule_path(tmp_path: Path) -> None:
    """LiveRules.trial compiles the running set with one file replaced; rule_path refuses names
    that are not rule files of the directory."""
    from picogate._gateway import Gateway
    from picogate._model import PointInfo, PointType
    from picogate.gateway import GatewayConfig
    from picogate.rules import RuleErrors, live_rules, replay
    from picogate.rules._config import RulesSection

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.rules").write_text('RULE hot\n  ON boiler.temp > 85\n  THEN alert("hot")\nEND\n')
    (rules_dir / "b.rules").write_text("LET boiler.double = boiler.temp * 2\n")
    cfg = GatewayConfig.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "clock": {"check_sync": False},
        }
    )
    async with Gateway(cfg) as gw:
        gw.registry.add(PointInfo("boiler", "temp", PointType.FLOAT64))
        await gw.reconfigure("rules", RulesSection(dir=rules_dir, watch=False))
        live = live_rules(gw)
        assert live is not None
        assert live.rule_names() == ["a.rules", "b.rules"]
        # the other files count: a.rules may use b.rules' LET
        ruleset = live.trial("a.rules", 'RULE hot\n  ON boiler.double > 170\n  THEN alert("hot")\nEND\n')
        assert [r.id for r in ruleset.rules if r.kind != "let"] == ["hot"]
        with pytest.raises(RuleErrors) as exc:
            live.trial("a.rules", 'RULE hot\n  ON boiler.tmp > 85\n  THEN log("x")\nEND\n')
        [error] = exc.value.errors
        assert (error.file, error.line, error.suggestion) == ("a.rules", 2, "boiler.temp")
        assert (rules_dir / "a.rules").read_text().startswith("RULE hot\n  ON boiler.temp > 85")  # untouched
        assert live.trial("new.rules", "") is not None  # a new file
        for bad in ("../a.rules", ".a.rules", "a.txt", "/etc/a.rules", "sub/a.rules", "", "a\0.rules"):
            with pytest.raises(ValueError, match="not a rule file name"):
                live.rule_path(bad)
        # replay: the same engine as `rules test --replay`, as data
        s = 1_000_000_000
        lines, cut = replay(
            ruleset, [Reading("boiler", "temp", t, i * s) for i, t in enumerate((80, 90, 80))]
        )
        assert cut == 0
        assert [(x.ts // s, x.rule, x.what) for x in lines if x.rule == "hot"] == [
            (1, "hot", "fired"),
            (1, "hot", "alert active warning: hot"),
            (2, "hot", "cleared"),
            (2, "hot", "alert cleared warning: hot"),
        ]

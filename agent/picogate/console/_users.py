"""The console's users: a JSON file beside the configuration, one entry per user with a role and an
argon2id password hash, managed with `picogate users add|passwd|remove`.

    {"users": {"alice": {"role": "engineer", "hash": "$argon2id$v=19$m=65536,t=3,p=4$…"}}}

Roles, each with everything of the one before: `viewer` (sees), `operator` (acknowledges alarms,
writes setpoints), `engineer` (edits rules).  The file is written atomically (a temporary file
renamed over it) with mode 0600, and read again whenever it changed, so that a user added or
removed from the command line counts at once in a running gateway.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from picogate._errors import PicogateError

__all__ = ["Role", "User", "Users", "UsersError", "hash_password", "verify_password"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
"""Characters of a password at most (argon2 takes any length: this only bounds the work)."""


class Role(enum.IntEnum):
    """What a user may do; a higher role includes every lower one."""

    VIEWER = 1
    OPERATOR = 2
    ENGINEER = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"role must be viewer, operator or engineer, not {text!r}") from None


class UsersError(PicogateError, ValueError):
    """The users file cannot be read or a user cannot be changed (what and where)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    hash: str


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, RFC 9106's low-memory profile (t=3, m=64 MiB, p=4)


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (checked for length first)."""
    check_password(password)
    return str(_hasher().hash(password))


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsersError(f"a password has at most {MAX_PASSWORD} characters")


_DUMMY: list[str] = []


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches the hash `stored`.  With `stored` None (no such user) a dummy
    hash is checked all the same, so that the time taken does not tell which names exist.  Slow on
    purpose (argon2: tens of milliseconds): call it off the event loop."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if len(password) > MAX_PASSWORD:
        return False
    hasher = _hasher()
    known = stored is not None
    if stored is None:
        if not _DUMMY:
            _DUMMY.append(hasher.hash("not the password of anyone"))
        stored = _DUMMY[0]
    try:
        return bool(hasher.verify(stored, password)) and known
    except (VerificationError, InvalidHashError):
        return False


class Users:
    """The users file: `get(name)` reads it again when it changed on disk; `add`, `set_password`
    and `remove` write it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ reading

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsersError(f"cannot read: {exc.strerror or exc}", where=str(self.path)) from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> dict[str, User]:
        """Every user (the file read again if it changed); {} when there is no file."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self._users
        self._users = {} if stamp is None else self._parse(self._read())
        self._stamp = stamp
        return self._users

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except PermissionError:
            raise UsersError(
                f"{self.path}: cannot read: permission denied; the gateway reads it as user "
                f"{_me()}: give it that file (chown {_me()} {self.path}, mode 600)",
                where=str(self.path),
            ) from None
        except OSError as exc:
            raise UsersError(
                f"{self.path}: cannot read: {exc.strerror or exc}", where=str(self.path)
            ) from None

    def _parse(self, raw: bytes) -> dict[str, User]:
        where = str(self.path)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UsersError(
                f"{where}: not a users file ({exc}); manage it with `picogate users`", where=where
            ) from None
        entries = doc.get("users") if isinstance(doc, dict) else None
        if not isinstance(entries, dict):
            raise UsersError(f'{where}: not a users file (no "users" object)', where=where)
        users: dict[str, User] = {}
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not NAME_RE.match(str(name)):
                raise UsersError(f"{where}: user {name!r}: not a valid entry", where=where)
            try:
                role = Role.parse(str(entry.get("role", "")))
            except ValueError as exc:
                raise UsersError(f"{where}: user {name!r}: {exc}", where=where) from None
            hashed = entry.get("hash")
            if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
                raise UsersError(f"{where}: user {name!r}: no argon2 password hash", where=where)
            users[name] = User(name, role, hashed)
        return users

    def get(self, name: str) -> User | None:
        return self.load().get(name)

    def engineers(self) -> list[str]:
        return sorted(u.name for u in self.load().values() if u.role is Role.ENGINEER)

    # ------------------------------------------------------------------ changing

    def add(self, name: str, role: Role, password: str) -> None:
        check_name(name)
        users = dict(self.load())
        if name in users:
            raise UsersError(
                f"user {name!r} exists already (use `picogate users passwd`)", where=str(self.path)
            )
        users[name] = User(name, role, hash_password(password))
        self._write(users)

    def set_password(self, name: str, password: str, *, role: Role | None = None) -> None:
        users = dict(self.load())
        old = users.get(name)
        if old is None:
            raise UsersError(f"no user {name!r} in {self.path}", where=str(self.path))
        users[name] = User(name, role or old.role, hash_password(password))
        self._write(users)

    def remove(self, name: str) -> None:
        users = dict(self.load())
        if name not in users:
            raise UsersError(f"no user {name!r} in {self.path}", where=str(self.path))
        del users[name]
        self._write(users)

    def _write(self, users: dict[str, User]) -> None:
        doc = {
            "users": {
                u.name: {"role": u.role.label, "hash": u.hash} for u in sorted(users.values(), key=_name)
            }
        }
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                os.fchmod(fd, 0o600)
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    st = os.stat(self.path)  # a file that exists keeps its owner, group and mode
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, st.st_uid, st.st_gid)
                    os.fchmod(fd, st.st_mode & 0o660)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise UsersError(
                f"{self.path}: cannot write: {exc.strerror or exc}", where=str(self.path)
            ) from None
        self._users, self._stamp = dict(users), self._stat()


def _me() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _name(u: User) -> str:
    return u.name


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsersError(
            f"user name {name!r}: 1 to 32 characters, a lower-case letter first, then lower-case letters, "
            "digits, '_', '.' or '-'"
        )

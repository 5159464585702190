"""Keeping secrets out of every output: which keys hold secrets, and masking their values.

Two nets, because either alone leaks:

- **By key.** `is_secret_key()` recognises a key that holds (or was meant to hold) a secret,
  misspelled or prefixed too: `password`, `passwrd`, `pasword`, `pw`, `mqtt_password`, `api_token`,
  `password_env` (whose value someone may have filled with the password itself).  The config loader
  masks the values of such keys in the source lines it quotes.
- **By value.** Every value found under such a key, and every secret the agent reads at run time
  (the MQTT password from its variable or file), is remembered here; `redact()` replaces each
  occurrence of one in a text, wherever it comes from: a "did you mean" message, an exception, a
  log line.  The log handlers (`picogate._logging`) pass everything they write through it.

Values shorter than `MIN_LENGTH` are not masked by value (masking every "1" in a log helps no one);
the key net still hides them where the configuration is quoted.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Iterable

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "is_secret_key",
    "maskable",
    "redact",
    "redact_with",
    "remember",
    "secret_values",
]

MASK = "********"
MIN_LENGTH = 4

_EXACT = frozenset(
    {"pw", "pwd", "pass", "passwd", "password", "passphrase", "secret", "secrets", "token", "apikey", "psk"}
)
_INSIDE = ("password", "passwd", "passphrase", "secret", "token", "apikey")
_FUZZY = ("password", "passwd")
_FUZZY_CUTOFF = 0.75
_SPLIT = re.compile(r"[^a-z0-9]+")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off"})

_lock = threading.Lock()
_known: frozenset[str] = frozenset()
_ordered: tuple[str, ...] = ()  # longest first, so that a secret containing another is masked whole


def is_secret_key(key: str) -> bool:
    """True for a key that holds a secret, also misspelled or combined with other words."""
    lowered = key.strip("\"' ").lower()
    words = [w for w in _SPLIT.split(lowered) if w]
    squashed = "".join(words)
    if any(w in _EXACT for w in words) or any(s in squashed for s in _INSIDE):
        return True
    # `passwrd`, `pasword`, `passwort`, `pssword`: a typo of the word is still a secret's key.
    return any(len(w) >= 5 and difflib.get_close_matches(w, _FUZZY, n=1, cutoff=_FUZZY_CUTOFF) for w in words)


def _worth_masking(value: str) -> bool:
    return len(value) >= MIN_LENGTH and value.lower() not in _YAML_WORDS


def maskable(values: Iterable[str]) -> frozenset[str]:
    """The texts to mask for these secret values: each value and each line of a multi-line one,
    stripped, leaving out those too short to mask by value."""
    out: set[str] = set()
    for value in values:
        for text in (value, *value.splitlines()):
            text = text.strip()
            if _worth_masking(text):
                out.add(text)
    return frozenset(out)


def remember(values: Iterable[str]) -> None:
    """Mask these values (and each line of a multi-line one) in every output from now on."""
    global _known, _ordered
    new = maskable(values)
    with _lock:
        if new <= _known:
            return
        _known = _known | new
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def secret_values() -> frozenset[str]:
    return _known


def redact_with(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of one of `secrets` replaced by MASK (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(text: str) -> str:
    """`text` with every remembered secret replaced by MASK."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text

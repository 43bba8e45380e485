"""FeatureHub API keys: which environment they name, whether they can be shared, how to log them.

A key is ``portfolio/environment/client*secret`` (or ``environment/client*secret``).
Each part goes into Edge's URL path and the environment id into store keys, so
a part is checked here, in the master, to hold only URL-unreserved ASCII
(letters, digits, ``-``, ``_``, ``.``, ``~``; plus the ``*`` between client and
secret): a ``#``, ``?``, ``%2F`` or space would otherwise reach Edge as another
path (reported as a deleted key) or make every store key invalid (reported as
a store outage).
"""

from __future__ import annotations

import re

_PART = re.compile(r"[A-Za-z0-9._~-]+")
_PART_NAMES = {3: ("portfolio", "environment id", "key"), 2: ("environment id", "key")}


def environment_id(api_key: str) -> str:
    """``a/b/c`` -> ``b``; ``b/c`` -> ``b`` (the FeatureHub API key layout)."""
    parts = api_key.split("/")
    if len(parts) == 3 and parts[1]:
        env = parts[1]
    elif len(parts) == 2 and parts[0]:
        env = parts[0]
    else:
        raise ValueError(f"cannot find the environment id in API key {redact(api_key)!r}: "
                         "expected 'portfolio/environment/key' or 'environment/key'")
    problem = _part_problem(env, "environment id")
    if problem:
        raise ValueError(f"API key {redact(api_key)!r}: {problem}")
    return env


def check_shape(api_key: str) -> str:
    """Raise ``ValueError`` naming the first character no FeatureHub key holds; return the key."""
    environment_id(api_key)
    parts = api_key.split("/")
    for part, name in zip(parts, _PART_NAMES[len(parts)], strict=True):
        if name == "key":  # client*secret: the secret is never shown
            client, star, secret = part.partition("*")
            problem = _part_problem(client, "client part") or (
                star and _part_problem(secret, "secret part", show=False))
        else:
            problem = _part_problem(part, name)
        if problem:
            raise ValueError(f"API key {redact(api_key)!r}: {problem}")
    return api_key


def _part_problem(part: str, name: str, show: bool = True) -> str | None:
    if not part:
        return f"its {name} is empty"
    if _PART.fullmatch(part):
        return None
    at = next(i for i, c in enumerate(part) if not _PART.fullmatch(c))
    char = part[at]
    what = ("a space" if char == " " else "a non-ASCII character" if not char.isascii()
            else f"{char!r}" if char.isprintable() else "a control character")
    where = f" (character {at + 1})" if show else ""
    return (f"its {name} holds {what}{where}; a key part holds only letters, digits, "
            "'-', '_', '.' and '~' (copy the key again from the FeatureHub admin)")


def require_client_evaluated(api_key: str) -> None:
    if "*" not in api_key:
        raise ValueError(
            "only client-evaluated API keys (they contain '*') can be shared between processes: "
            "a server-evaluated key gives each context its own resolved values, and sharing them "
            f"would make processes overwrite each other's flags (key {redact(api_key)!r})"
        )


def redact(api_key: str) -> str:
    """Keep enough of a key to recognise it in a log, not enough to use it.

    ``portfolio/env/client*secret`` -> ``portfolio/env/client*...``;
    a server-evaluated key loses everything after its last ``/``.
    """
    path, slash, last = api_key.rpartition("/")
    shown = last.partition("*")[0] + "*..." if "*" in last else "..."
    return f"{path}{slash}{shown}"

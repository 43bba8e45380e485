"""FeatureHub API keys: which environment they name, whether they can be shared, how to log them."""

from __future__ import annotations


def environment_id(api_key: str) -> str:
    """``a/b/c`` -> ``b``; ``b/c`` -> ``b`` (the FeatureHub API key layout)."""
    parts = api_key.split("/")
    if len(parts) == 3 and parts[1]:
        return parts[1]
    if len(parts) == 2 and parts[0]:
        return parts[0]
    raise ValueError(f"cannot find the environment id in API key {redact(api_key)!r}: "
                     "expected 'portfolio/environment/key' or 'environment/key'")


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

"""``fh-prefork``: look into a store, watch the demo, run the benchmark, list the settings.

.. code-block:: text

    fh-prefork demo                                  # see it work, no memcached needed
    fh-prefork status --store memcache://cache:11211 --api-key 'p/env/key*secret'
    fh-prefork bench --json bench-results.json
    fh-prefork settings                              # the settings table, as Markdown

``status`` exit codes, for health checks: 0 healthy (store reachable, data
present, fingerprint consistent), 1 store unreachable or unreadable, 2 bad
arguments or settings, 3 reachable but empty, inconsistent or holding junk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from . import features as fs
from .settings import SETTINGS, Setting

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 3

_SETTING = {s.name: s for s in SETTINGS}


def _parse_setting(name: str, raw: str) -> Any:
    setting: Setting = _SETTING[name]
    try:
        return setting.parse(raw)
    except ValueError as err:
        raise _Usage(f"{setting.env}: {err}") from None


class _Usage(Exception):
    """Bad arguments or settings: exit code 2."""


# -- settings ---------------------------------------------------------------------------------

def settings_table() -> str:
    """The README's settings table, generated from ``fh_prefork.settings.SETTINGS``."""
    lines = ["| Environment variable | `configure()` name | Default | Meaning |",
             "|---|---|---|---|"]
    for s in SETTINGS:
        default = "*required*" if s.default is None else f"`{s.default}`"
        meaning = s.help.replace("|", "\\|")
        lines.append(f"| `{s.env}` | `{s.name}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def options_table() -> str:
    """The README's store-options table, generated from the options dataclasses' declarations."""
    from dataclasses import Field, fields

    from .store.options import (
        MemcacheSessionStoreOptions,
        RedisSessionStoreOptions,
        SessionStoreOptions,
    )

    shared = [f for f in fields(SessionStoreOptions)]
    extra: dict[str, tuple[Field[Any], list[str]]] = {}
    for cls, backend in ((MemcacheSessionStoreOptions, "memcached"),
                         (RedisSessionStoreOptions, "Redis")):
        for f in fields(cls):
            if f.name not in {s.name for s in shared}:
                extra.setdefault(f.name, (f, []))[1].append(backend)
    lines = ["| Option | Default | Why |", "|---|---|---|"]
    rows = [(f, "") for f in shared] + [(f, " and ".join(b) + " only: ")
                                        for f, b in extra.values()]
    for f, only in rows:
        shown = f.metadata.get("shown") or f"`{f.default}`"
        why = str(f.metadata.get("help", "")).replace("|", "\\|")
        lines.append(f"| `{f.name}` | {shown} | {only}{why} |")
    return "\n".join(lines) + "\n"


#: README sections generated from the declarations: name -> generator.
GENERATED = {"settings": settings_table, "store-options": options_table}


def generated_readme(text: str) -> str:
    """``text`` with every ``<!-- generated: NAME -->`` ... ``<!-- end: NAME -->`` block rebuilt."""
    import re

    for name, make in GENERATED.items():
        pattern = re.compile(rf"(<!-- generated: {name} .*?-->\n).*?(<!-- end: {name} -->)",
                             re.S)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"README has no generated block {name!r}")
        text = text[:found.end(1)] + make() + text[found.start(2):]
    return text


def cmd_settings(args: argparse.Namespace) -> int:
    if args.readme is None:
        sys.stdout.write(settings_table())
        return EXIT_OK
    path = Path(args.readme)
    try:
        text = path.read_text()
        path.write_text(generated_readme(text))
    except (OSError, ValueError) as err:
        print(f"fh-prefork settings: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


# -- status -----------------------------------------------------------------------------------

def _describe_lease(lease: Any, now: float) -> dict[str, Any] | None:
    if lease is None:
        return None
    if not isinstance(lease, dict) or lease.get("unreadable"):
        return {"unreadable": True}
    shown = {k: lease.get(k) for k in ("holder", "host", "pid", "expires_at")}
    expires = lease.get("expires_at")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        shown["expires_in"] = round(float(expires) - now, 3)
        shown["expired"] = expires < now
    return shown


def _read(backend: Any) -> dict[str, Any]:
    """One read through the backend that owns the layout (read-only: it creates nothing)."""
    try:
        snapshot = backend.read()
        lease = backend.lease_read()   # None when nobody holds it (a past term's record too)
        written_at = getattr(backend, "written_at", lambda: None)()
    finally:
        backend.close()
    fingerprints = getattr(backend, "fingerprint_tokens", True)  # the file's are stat tokens
    return {"value": snapshot.value, "sha": snapshot.change_token if fingerprints else None,
            "fingerprints": fingerprints, "mtime": written_at,
            "leader": lease.public() if lease is not None else None,
            "location": backend.description}


def inspect_store(store: str, api_key: str, prefix: str = "featurehub",
                  timeout: float = 1.0) -> dict[str, Any]:
    """What a store holds for one environment, read directly (JSON only, never unpickled)."""
    from .apikey import environment_id
    from .store.redis import describe_url, is_redis_url

    env = environment_id(api_key)
    key = f"{prefix}_{env}"
    shown = describe_url(store) if is_redis_url(store) else store   # never a password
    report: dict[str, Any] = {"store": shown, "environment_id": env, "key": key,
                              "reachable": False, "present": False, "features": [],
                              "feature_count": 0, "bytes": None, "fingerprint": None,
                              "stored_fingerprint": None, "fingerprint_ok": None,
                              "age_seconds": None, "leader": None, "problems": []}
    now = time.time()
    from .store import open_backend

    try:
        raw = _read(open_backend(store, key, timeout))
    except FileNotFoundError:
        raw = {"missing_folder": True, "value": None, "sha": None, "leader": None,
               "mtime": None, "location": store}
    except Exception as err:  # socket, timeout, permission, refusal: all mean "unreadable"
        report["problems"].append(f"store unreachable or unreadable: {type(err).__name__}: "
                                  f"{err}")
        report["exit_code"] = EXIT_UNREACHABLE
        report["healthy"] = False
        return report
    report["reachable"] = True
    report["location"] = raw["location"]
    report["leader"] = _describe_lease(raw["leader"], now)
    value: bytes | None = raw["value"]
    if raw.get("missing_folder"):
        report["problems"].append("the store folder does not exist yet: nothing was stored")
    if value is None:
        if not raw.get("missing_folder"):
            report["problems"].append(f"no data under {key}: empty store (wrong --api-key or "
                                      "--prefix, or no worker has received features yet)")
        report["exit_code"] = EXIT_UNHEALTHY
        report["healthy"] = False
        return report
    report["present"] = True
    report["bytes"] = len(value)
    if raw["mtime"] is not None:
        report["age_seconds"] = round(max(0.0, now - raw["mtime"]), 3)
    decoded = fs.decode(value, fs.MAX_READ_BYTES)
    if decoded.problem:
        report["problems"].append(f"data is junk: {decoded.problem}")
    if decoded.dropped:
        report["problems"].append(f"{decoded.dropped} unusable or duplicate entr"
                                  f"{'y' if decoded.dropped == 1 else 'ies'} in the data")
    feats = sorted(decoded.features, key=lambda f: str(f["key"]))
    report["features"] = [{"key": f["key"], "id": f["id"], "version": f["version"],
                           "type": f.get("type"), "value": f.get("value")} for f in feats]
    report["feature_count"] = len(feats)
    if decoded.problem is None:
        report["fingerprint"] = fs.fingerprint(decoded.placed.values())
    if raw["fingerprints"]:
        stored = raw["sha"]
        report["stored_fingerprint"] = stored
        if decoded.problem is None:  # sorted (ours, JS) or array order (Ruby): both agree
            report["fingerprint_ok"] = stored in decoded.consistent_fingerprints()
            if not report["fingerprint_ok"]:
                report["problems"].append(
                    f"fingerprint key {key}_sha holds {stored or 'nothing'}, the data's is "
                    f"{report['fingerprint']} (workers repair it on their next full read)")
    elif decoded.problem is None:
        report["fingerprint_ok"] = True  # the file store derives its change token from the file
    report["healthy"] = not report["problems"]
    report["exit_code"] = EXIT_OK if report["healthy"] else EXIT_UNHEALTHY
    return report


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (memcached keeps no write time)"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_status(report: dict[str, Any]) -> str:
    out = [f"store:        {report.get('location', report['store'])}",
           f"environment:  {report['environment_id']}"]
    if not report["reachable"]:
        out.append("state:        UNREACHABLE")
    elif not report["present"]:
        out.append("state:        EMPTY")
    else:
        out.append(f"state:        {'healthy' if report['healthy'] else 'UNHEALTHY'}")
        out.append(f"size:         {report['bytes']} bytes, {report['feature_count']} features")
        out.append(f"age:          {_age(report['age_seconds'])}")
        fp = report["fingerprint"] or "-"
        if report["stored_fingerprint"] is not None or report["store"].startswith("memcache"):
            check = "matches the data" if report["fingerprint_ok"] else "DOES NOT MATCH"
            out.append(f"fingerprint:  {fp} (key {report['key']}_sha {check})")
        else:
            out.append(f"fingerprint:  {fp}")
    lease = report["leader"]
    if lease is None:
        out.append("leader lease: none")
    elif lease.get("unreadable"):
        out.append("leader lease: present but unreadable")
    else:
        when = ""
        if "expires_in" in lease:
            when = (f", expired {-lease['expires_in']:.1f} s ago" if lease["expired"]
                    else f", expires in {lease['expires_in']:.1f} s")
        out.append(f"leader lease: {lease.get('holder')} (host {lease.get('host')}, "
                   f"pid {lease.get('pid')}{when})")
    if report["features"]:
        rows = [("KEY", "VERSION", "VALUE", "ID")]
        rows += [(str(f["key"]), str(f["version"]), json.dumps(f["value"]), str(f["id"]))
                 for f in report["features"]]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        out.append("")
        for r in rows:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True))
                       + "  " + r[3])
    for problem in report["problems"]:
        out.append(f"problem:      {problem}")
    return "\n".join(out) + "\n"


def describe_store(url: str) -> str:
    """A store URL as logs and status show it: a Redis password masked."""
    from .store.redis import describe_url, is_redis_url

    return describe_url(url) if is_redis_url(url) else url


def _master_store(master: psutil.Process) -> str | None:
    """FH_PREFORK_STORE as the master has it: the URL with its password, which records mask."""
    try:
        return master.environ().get("FH_PREFORK_STORE")
    except psutil.Error:
        return None


#: Seconds ``status --server`` waits before re-checking workers that disagree with the store:
#: each worker rewrites its record once a second, so a store that just changed is seen by
#: every worker's record after this (a flip is not a failure).
SETTLE_SECONDS = 2.0


def inspect_server(master_pid: int, timeout: float = 1.0, store: str | None = None,
                   settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    """Every live worker of a gunicorn or uWSGI master, and whether each agrees with its store.

    ``store``: the store URL to compare with, for a store whose password the
    workers' records mask (default: ``FH_PREFORK_STORE`` in the master's
    environment, when it can be read). Workers that differ from a readable store
    are asked again once after ``settle`` seconds: their records may predate a
    change the store just took. A disagreement names its cause where one shows:
    the store unreachable or empty, Edge not knowing the API key, Edge down.
    """
    try:
        master = psutil.Process(master_pid)
        title = " ".join(master.cmdline())
    except psutil.Error as err:
        return {"master_pid": master_pid, "workers": [], "healthy": False,
                "problems": [f"no such process: {err}"], "exit_code": EXIT_UNREACHABLE}
    report = _inspect_workers(master, title, timeout, store)
    if settle > 0 and any(r.get("agrees") is False and r.get("cause") == "differs"
                          for r in report["workers"]):
        time.sleep(settle)
        report = _inspect_workers(master, title, timeout, store)
        report["rechecked_after"] = settle
    return report


def _inspect_workers(master: psutil.Process, title: str, timeout: float,
                     store: str | None) -> dict[str, Any]:
    from . import status_records

    master_pid = master.pid
    records, silent = status_records.read_server(master_pid)
    report: dict[str, Any] = {"master_pid": master_pid, "command": title, "workers": records,
                              "silent": silent, "stores": {}, "problems": []}
    unmasked = store or _master_store(master)
    now = time.time()
    seen: dict[tuple[str, str, str], tuple[str | None, str | None]] = {}
    for record in records:
        url = str(record.get("store"))
        if ":***@" in url:
            if unmasked is None or describe_store(unmasked) != url:
                report["problems"].append(
                    f"worker {record['pid']}'s store {url} has a masked password: pass "
                    "--store with the full URL to compare with it")
                record["agrees"] = None
                record["cause"] = "store password masked"
                continue
            url = unmasked
        store_key = (url, str(record.get("environment_id")),
                     str(record.get("prefix") or "featurehub"))
        if store_key not in seen:
            seen[store_key] = _store_state(*store_key, timeout=timeout)
        stored, store_problem = seen[store_key]
        record["age"] = (None if record.get("last_refresh") is None
                         else round(now - float(record["last_refresh"]), 3))
        record["agrees"] = stored is not None and stored == record.get("fingerprint")
        if record["agrees"]:
            record["cause"] = None
            continue
        cause, problem = _why_differs(record, stored, store_problem, describe_store(url))
        record["cause"] = cause
        if cause == "store unreachable":
            record["agrees"] = None     # nothing to compare with: unknown, not different
        report["problems"].append(f"worker {record['pid']}: {problem}")
    if not records:
        report["problems"].append(f"process {master_pid} has no live worker publishing its "
                                  "status" + (f" ({len(silent)} child process(es) publish none: "
                                              "fh_prefork not started there)" if silent else ""))
    report["stores"] = {f"{describe_store(k[0])} {k[2]}_{k[1]}": v[0] for k, v in seen.items()}
    report["healthy"] = not report["problems"]
    report["exit_code"] = EXIT_OK if report["healthy"] else (
        EXIT_UNREACHABLE if not records else EXIT_UNHEALTHY)
    return report


#: Edge states of a worker whose Edge view is current (SupervisedEdge's names).
_EDGE_UP = {"connected", "polling", "standby", "none"}


def _why_differs(record: dict[str, Any], stored: str | None, store_problem: str | None,
                 store_shown: str) -> tuple[str, str]:
    """(short cause, one line) for a worker whose fingerprint is not the store's."""
    held = record.get("fingerprint")
    edge_state = str(record.get("edge_state") or "unknown")
    holds = (f"holds fingerprint {str(held)[:12]}" if held
             else "holds no features")
    if store_problem is not None and stored is None and "unreachable" in store_problem:
        return "store unreachable", (f"the store {store_shown} is {store_problem}: cannot "
                                     f"compare (the worker {holds}, Edge {edge_state})")
    if edge_state == "key_not_found":
        return "edge key not found", (f"Edge answers that the API key does not exist "
                                      f"(404, key not found): the worker {holds}; check "
                                      "FEATUREHUB_API_KEY and that the key was not deleted")
    if not held and edge_state not in _EDGE_UP:
        where = store_problem or "holds nothing for it either"
        return "edge down", (f"Edge is down (state {edge_state}) and the store {where}: the "
                             "worker has nothing to serve")
    if stored is None:
        return "store empty", (f"the store {store_shown} {store_problem or 'holds no data'}; "
                               f"the worker {holds} (Edge {edge_state})")
    return "differs", (f"the worker {holds}, the store {stored[:12]} (Edge {edge_state}): it "
                       "is behind or ahead of the store")


def _store_state(store: str, environment: str, prefix: str,
                 timeout: float) -> tuple[str | None, str | None]:
    """(fingerprint of what the store holds, sorted formula; or None and why not)."""
    from .store import open_backend

    try:
        raw = _read(open_backend(store, f"{prefix}_{environment}", timeout))
    except FileNotFoundError:
        return None, "has no folder yet (nothing was stored)"
    except Exception as err:  # socket, timeout, permission, refusal: all mean "unreadable"
        return None, f"unreachable or unreadable ({type(err).__name__}: {err})"
    if raw["value"] is None:
        return None, f"holds no data under {prefix}_{environment}"
    decoded = fs.decode(raw["value"], fs.MAX_READ_BYTES)
    if decoded.problem:
        return None, f"holds junk ({decoded.problem})"
    return fs.fingerprint(decoded.placed.values()), None


def _agreement(record: dict[str, Any]) -> str:
    if record.get("agrees"):
        return "agrees"
    cause = record.get("cause")
    if record.get("agrees") is None:
        return f"unknown: {cause}" if cause else "unknown"
    return "DIFFERS" if cause in (None, "differs") else f"DIFFERS: {cause}"


def format_server(report: dict[str, Any]) -> str:
    out = [f"server:  {report['master_pid']} {report.get('command', '')}".rstrip(),
           f"workers: {len(report['workers'])}"]
    rows = [("PID", "ROLE", "EDGE", "REFRESHED", "FEATURES", "FINGERPRINT", "STORE")]
    for r in report["workers"]:
        age = r.get("age")
        rows.append((str(r["pid"]), str(r.get("role")), str(r.get("edge_state") or "-"),
                     "-" if age is None else f"{age:.1f} s ago", str(r.get("features", "-")),
                     str(r.get("fingerprint") or "-")[:12],
                     _agreement(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out.append("")
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
    if report.get("silent"):
        out.append(f"  no status from child process(es) {', '.join(map(str, report['silent']))}"
                   ": not a worker (uWSGI's HTTP router), or fh_prefork not started there")
    for problem in report["problems"]:
        out.append(f"problem: {problem}")
    return "\n".join(out) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    if args.server is not None:
        server = inspect_server(args.server, timeout=args.timeout, store=args.store)
        if args.json:
            print(json.dumps(server, default=str, sort_keys=True))
        else:
            sys.stdout.write(format_server(server))
        return int(server["exit_code"])
    try:
        store = _parse_setting("store", args.store or os.environ.get("FH_PREFORK_STORE",
                                                                     "default"))
        if store == "none":
            raise _Usage("FH_PREFORK_STORE is 'none': there is no store to look into")
        api_key = args.api_key or os.environ.get("FEATUREHUB_API_KEY")
        if not api_key:
            raise _Usage("--api-key (or FEATUREHUB_API_KEY) is required: the store's keys "
                         "are named after its environment id")
        _parse_setting("api_key", api_key)
        prefix = _parse_setting("prefix", args.prefix or os.environ.get("FH_PREFORK_PREFIX",
                                                                        "featurehub"))
    except _Usage as err:
        print(f"fh-prefork status: {err}", file=sys.stderr)
        return EXIT_USAGE
    report = inspect_store(store, api_key, prefix, timeout=args.timeout)
    if args.json:
        print(json.dumps(report, default=str, sort_keys=True))
    else:
        sys.stdout.write(format_status(report))
    return int(report["exit_code"])


# -- demo and bench (heavier imports, loaded on demand) ----------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .bench.demo import run_demo

    return run_demo(workers=args.workers, interval=args.interval, flips=args.flips,
                    refresh=args.refresh, server=args.server)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.report import run_bench

    return run_bench(quick=args.quick, json_path=args.json, only=args.only)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fh-prefork",
        description="FeatureHub feature flags inside prefork servers (gunicorn, uWSGI): "
                    "inspect a store, watch the demo, run the benchmark.",
        epilog="Run 'fh-prefork COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "status", help="show what a store holds; exit code for health checks",
        description="Read a store directly and show its features, versions, fingerprint, "
                    "size, age and leader lease. Exit codes: 0 healthy, 1 store unreachable "
                    "or unreadable, 2 bad arguments or settings, 3 reachable but empty, "
                    "inconsistent or holding junk.")
    p.add_argument("--store", metavar="URL",
                   help="memcache://host:port[,host:port], redis://..., file:///folder "
                        "(default: $FH_PREFORK_STORE, else the embedded default store; with "
                        "--server: the store to compare with when records mask a password, "
                        "default the master's $FH_PREFORK_STORE)")
    p.add_argument("--api-key", metavar="KEY",
                   help="client-evaluated API key; names the environment "
                        "(default: $FEATUREHUB_API_KEY)")
    p.add_argument("--prefix", help="key prefix (default: $FH_PREFORK_PREFIX, else featurehub)")
    p.add_argument("--server", type=_positive(int), metavar="MASTER_PID",
                   help="show every live worker of this gunicorn or uWSGI master instead: "
                        "role, Edge state, last refresh, fingerprint, agreement with the store")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="memcached connect/read timeout (default: 1)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "demo", help="watch a flag change reach every worker of a real gunicorn",
        description="Start a local Edge simulator and a gunicorn master with N workers on the "
                    "embedded file store (no memcached needed), flip a flag on a timer through "
                    "ONE worker's Edge stream, and show live each worker's value and version "
                    "until they all agree. Ctrl-C stops everything.")
    p.add_argument("--workers", type=_positive(int), default=4, help="gunicorn workers (4)")
    p.add_argument("--interval", type=_positive(float), default=3.0, metavar="SECONDS",
                   help="seconds between flips (3)")
    p.add_argument("--flips", type=_positive(int), default=None, metavar="N",
                   help="stop after N flips (default: run until Ctrl-C)")
    p.add_argument("--refresh", type=_positive(float), default=0.5, metavar="SECONDS",
                   help="store refresh period of the workers (0.5)")
    p.add_argument("--server", choices=("gunicorn", "uwsgi"), default="gunicorn",
                   help="prefork server to run (gunicorn)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench", help="run the benchmark: print tables, write JSON",
        description="Measure the compare-and-set storm, same-update storm, propagation to "
                    "real workers, cold start, memory and threads, flag read cost, Edge "
                    "connections and OpenFeature resolution cost. Prints a table per section "
                    "(progress on stderr) and writes JSON.")
    p.add_argument("--quick", action="store_true",
                   help="small runs of every section (about a minute)")
    p.add_argument("--json", default="bench-results.json", metavar="PATH",
                   help="where to write the results (default: bench-results.json)")
    from .bench.sections import SECTIONS  # the names only: the benchmark loads in cmd_bench

    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections: {', '.join(SECTIONS)}")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("settings", help="print the settings table (Markdown)",
                       description="Print every setting: environment variable, configure() "
                                   "name, default and meaning, as a Markdown table.")
    p.add_argument("--readme", metavar="PATH",
                   help="rewrite the generated tables (settings, store options) in this README "
                        "instead of printing")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the documented steps of the demo and of every example from a fresh virtualenv made
from the built wheel, outside the checkout: what a newcomer types, proven in CI.

    python scripts/try_examples.py dist/fh_prefork-*.whl [--only flask uwsgi ...]

The steps come from examples/examples.json, which docs/examples.md renders: the install
line with ``fh-prefork`` replaced by the wheel, an Edge simulator, the example's start
command in a copy of its folder, a request, a flip on the simulator, a request again.
The documented ports (8085 for Edge, 8000 for the app) become free ones. Every process
started is stopped by its process group. Prints one line per step with its time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "examples" / "examples.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str, started: float) -> None:
    print(f"  [{time.monotonic() - started:6.1f} s] {text}", flush=True)


def install(venv: Path, line: str, wheel: Path, log: Path) -> None:
    """``line`` (``pip install 'fh-prefork[x]' pkg``) into ``venv``, the wheel for fh-prefork."""
    args = shlex.split(line)
    if args[:2] != ["pip", "install"]:
        raise ValueError(f"not a pip install line: {line!r}")
    packages = [re.sub(r"^fh-prefork(?=\[|$)", str(wheel), a) for a in args[2:]]
    if str(wheel) not in " ".join(packages):
        raise ValueError(f"the install line names no fh-prefork: {line!r}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with open(log, "ab") as out:   # this pip, told where to install: no pip copy per venv
        subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                        "install", "-q", "--disable-pip-version-check", *packages],
                       check=True, stdout=out, stderr=subprocess.STDOUT)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check: Any, timeout: float, procs: list[subprocess.Popen[bytes]],
             log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a process exited with {proc.returncode}\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
        try:
            found = check()
        except (OSError, ValueError, urllib.error.URLError):
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def run_example(example: dict[str, Any], common: dict[str, str], wheel: Path,
                work: Path) -> None:
    started = time.monotonic()
    name = example["name"]
    venv, log = work / f"venv-{name}", work / f"{name}.log"
    print(f"{name}: {example['install']}", flush=True)
    install(venv, example["install"], wheel, log)
    say("installed from the wheel", started)
    folder = work / example["folder"]
    edge_port, app_port = free_port(), free_port()
    runtime = work / f"run-{name}"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FH_PREFORK_", "FEATUREHUB_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               XDG_RUNTIME_DIR=str(runtime), WEB_CONCURRENCY="2",
               BIND=f"127.0.0.1:{app_port}")
    for assignment in shlex.split(common["env"])[1:]:     # export A=1 B=2
        key, _, value = assignment.partition("=")
        env[key] = value.replace("8085", str(edge_port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(log, "ab") as out:
            for command, cwd in ((common["edge"].rstrip(" &"), work),
                                 (example["start"], folder)):
                command = command.replace("8085", str(edge_port)).replace("8000",
                                                                         str(app_port))
                procs.append(subprocess.Popen(["bash", "-c", command], cwd=cwd,
                                              env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        app = f"http://127.0.0.1:{app_port}"
        body = wait_for(f"{name} to serve NEW_CHECKOUT=true",
                        lambda: (b := get_json(app + "/")) and b.get("enabled") is True and b,
                        90, procs, log)
        say(f"GET / -> {json.dumps(body, sort_keys=True)}", started)
        request = urllib.request.Request(
            f"http://127.0.0.1:{edge_port}/_sim/feature", method="POST",
            data=json.dumps({"key": "NEW_CHECKOUT", "value": False}).encode())
        with urllib.request.urlopen(request, timeout=5) as resp:
            resp.read()
        say("flipped NEW_CHECKOUT to false on the simulator", started)

        def all_false() -> bool:
            return all(get_json(app + "/").get("enabled") is False for _ in range(8))

        wait_for(f"{name}'s workers to serve NEW_CHECKOUT=false", all_false, 30, procs, log)
        say("GET / -> enabled false on every answer", started)
        if example.get("also"):
            with urllib.request.urlopen(app + example["also"], timeout=5) as resp:
                text = resp.read().decode()
            if "fh_prefork_" not in text:
                raise RuntimeError(f"{example['also']} shows no fh_prefork metric:\n{text[:500]}")
            say(f"GET {example['also']} -> fh_prefork_* metrics", started)
    finally:
        stop(procs)
    say(f"{name}: ok", started)


def run_demo(demo: dict[str, str], wheel: Path, work: Path) -> None:
    started = time.monotonic()
    venv, log = work / "venv-demo", work / "demo.log"
    print(f"demo: {demo['install']} && {demo['run']}", flush=True)
    install(venv, demo["install"], wheel, log)
    say("installed from the wheel", started)
    runtime = work / "run-demo"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FH_PREFORK_", "FEATUREHUB_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               XDG_RUNTIME_DIR=str(runtime))
    command = [*shlex.split(demo["run"]), "--flips", "2", "--interval", "1"]
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0 or "agree" not in proc.stdout:
        raise RuntimeError(f"the demo failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    agreed = [line for line in proc.stdout.splitlines() if "agree" in line]
    say(agreed[-1].strip(), started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="demo and/or example names (default: all)")
    args = parser.parse_args()
    catalog = json.loads(CATALOG.read_text())
    wheel = args.wheel.resolve()
    work = Path(tempfile.mkdtemp(prefix="fh-try-examples-"))
    failures = []
    try:
        shutil.copytree(ROOT / "examples", work / "examples")   # outside the checkout
        wanted = set(args.only or ["demo", *(e["name"] for e in catalog["examples"])])
        if "demo" in wanted:
            try:
                run_demo(catalog["demo"], wheel, work)
            except Exception as err:  # report every example, then fail
                failures.append(f"demo: {err}")
        for example in catalog["examples"]:
            if example["name"] in wanted:
                try:
                    run_example(example, catalog["common"], wheel, work)
                except Exception as err:
                    failures.append(f"{example['name']}: {err}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

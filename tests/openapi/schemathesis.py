#!/usr/bin/env python3
"""Fuzzes the admin API against its own OpenAPI document with schemathesis.

Starts the built recordhook with a throwaway configuration (SQLite spool, an
admin listener with a token, a file sink that delivers and a forward sink to a
closed port that turns every record into a dead letter), sends it signed
callbacks with `recordhook send-test`, then runs schemathesis over every
operation in /api/v1/openapi.json with the token. Checks: no 5xx, responses
match their schema, status codes and content types are documented.

Usage: tests/openapi/schemathesis.py [path/to/recordhook]
(default target/debug/recordhook; build it first with `cargo build`).
schemathesis is installed into target/schemathesis-venv on first use. Exits 0
without fuzzing when it cannot be installed, unless CI=true.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "schemathesis-venv"
SCHEMATHESIS_VERSION = "4.32.5"
TOKEN = "openapi-fuzz-token-0123456789abcdef"
KEY = "openapi-fuzz-callback-key"
# Cases per operation and a fixed seed: about a minute, the same cases each run.
MAX_EXAMPLES = 100
SEED = 20261204
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def cannot_run(why: str) -> None:
    """Fails under CI; elsewhere says why and skips."""
    if os.environ.get("CI") == "true":
        sys.exit(f"schemathesis: cannot run: {why}")
    print(f"schemathesis: skipped: {why}")
    sys.exit(0)


def schemathesis() -> Path:
    """The schemathesis CLI, installed into a venv under target/ when missing."""
    cli = VENV / "bin" / "schemathesis"
    if not cli.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "-q", f"schemathesis=={SCHEMATHESIS_VERSION}"],
                check=True,
            )
        except (subprocess.CalledProcessError, OSError) as err:
            cannot_run(f"installing schemathesis failed: {err}")
    return cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    """Waits until `url` answers 200, or fails with the server's log."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"recordhook exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"recordhook did not become ready:\n{log.read_text()}")


def wait_for_dead_letters(base: str, server: subprocess.Popen, log: Path) -> None:
    """Waits until the forward sink's first attempts have failed, so the fuzzer
    meets dead letters as well as delivered records."""
    request = urllib.request.Request(f"{base}/api/v1/sinks", headers={"Authorization": f"Bearer {TOKEN}"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=5) as answer:
            sinks = json.load(answer)["sinks"]
        if any(sink["dead"] > 0 for sink in sinks):
            print("sinks before fuzzing:", ", ".join(f"{s['name']} pending {s['pending']} dead {s['dead']}" for s in sinks))
            return
        if server.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit(f"no dead letters appeared:\n{log.read_text()}")


def main() -> None:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target" / "debug" / "recordhook")
    if not binary.exists():
        sys.exit(f"{binary} does not exist: run `cargo build` first")
    cli = schemathesis()
    work = Path(tempfile.mkdtemp(prefix="recordhook-openapi-"))
    public, admin, closed = free_port(), free_port(), free_port()
    config = work / "recordhook.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{public}"

[auth]
keys = ["{KEY}"]

[spool]
path = "{work}/spool.db"

[log]
format = "pretty"

[admin]
listen = "127.0.0.1:{admin}"
tokens = ["{TOKEN}"]

[[sinks]]
name = "archive"
type = "file"
path = "{work}/records.jsonl"
event_types = ["*"]

[[sinks]]
name = "backend"
type = "forward"
url = "http://127.0.0.1:{closed}/hooks"
event_types = [100]
max_attempts = 1
"""
    )
    log = work / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdout=out, stderr=out)
    try:
        wait_ready(f"http://127.0.0.1:{public}/healthz", server, log)
        for event_type, stream in [(100, "s1"), (100, "s2"), (100, "s1"), (1, "s1"), (0, "s2"), (200, "s3")]:
            subprocess.run(
                [str(binary), "send-test", "--url", f"http://127.0.0.1:{public}/callback", "--key", KEY,
                 "--event-type", str(event_type), "--stream-id", stream],
                check=True, stdout=subprocess.DEVNULL,
            )
        base = f"http://127.0.0.1:{admin}"
        wait_for_dead_letters(base, server, log)
        run = subprocess.run(
            [str(cli), "--no-color", "run", f"{base}/api/v1/openapi.json", "--url", base,
             "-H", f"Authorization: Bearer {TOKEN}", "--checks", CHECKS,
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work,
        )
        print(run.stdout)
        cases = re.search(r"Test cases:\s*(\d+) generated", run.stdout)
        print(f"schemathesis: {cases.group(1) if cases else 'unknown number of'} cases run, exit {run.returncode}")
        if run.returncode != 0:
            print(f"server log: {log}")
            sys.exit(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Paired benchmark of two recordhook versions' logging:
`python3 bench/logging.py OLD_REV [NEW_REV]`.

Builds recordhook (release) at OLD_REV and at NEW_REV (default: the working
tree), each git revision in a temporary worktree, starts both with the same
configuration as bench/run.py (log sink + file sink, JSON logs at `info` to a
file in the work directory), and runs the same wrk load against them in turn,
ROUNDS times: old, new, old, new, ... Each pair's ratios new/old are what it
reports (requests/s, and CPU per callback from the process's utime + stime),
because absolute figures move from run to run on this shared machine.

Used to decide whether the hand-written JSON formatter and batching writer
were worth keeping over tracing-subscriber's JSON format and tracing-appender's
non-blocking writer (bench/BENCHMARKS.md, "Logging"); any two revisions work.

Environment: DURATION (seconds per run, default 10), CONNECTIONS (32),
THREADS (wrk threads, 2), ROUNDS (5), CARGO_TARGET_DIR (shared by both
builds, so dependencies compile once). Needs wrk (Debian package `wrk`).
Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: wrk, ports, metrics)

ROOT = run.ROOT
ROUNDS = int(os.environ.get("ROUNDS", "5"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
TICKS = os.sysconf("SC_CLK_TCK")


def build(rev, into):
    """Builds recordhook at `rev` (None: the working tree) and copies it to `into`."""
    source = ROOT
    worktree = None
    if rev is not None:
        worktree = Path(tempfile.mkdtemp(prefix="recordhook-rev-"))
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", worktree, rev],
                       cwd=ROOT, check=True)
        source = worktree
    try:
        print(f"building {rev or 'the working tree'} ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "recordhook"],
                       cwd=source, check=True, env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)))
        shutil.copy2(TARGET / "release" / "recordhook", into)
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT, check=True)
    return into


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    """One recordhook, its own spool, file sink and log file under `work`."""

    def __init__(self, name, binary, work, key):
        self.name = name
        self.dir = work / name
        self.dir.mkdir()
        port = run.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.records = self.dir / "records.jsonl"
        config = self.dir / "recordhook.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[auth]
max_validity_secs = 7200
[spool]
path = "{self.dir / 'spool.db'}"
[log]
format = "json"
level = "info"
[[sinks]]
name = "console"
type = "log"
[[sinks]]
name = "archive"
type = "file"
path = "{self.records}"
rotate_max_bytes = 0
rotate_daily = false
""")
        self.log = open(self.dir / "recordhook.log", "wb")
        self.process = subprocess.Popen([binary, "serve", "--config", config], cwd=self.dir,
                                        stdout=self.log, env=dict(os.environ, RECORDHOOK__AUTH__KEYS=key))
        run.wait_healthy(f"{self.base}/healthz", self.process, name)

    def load(self, prefix, t, sign):
        """One wrk run; then waits for the file sink to catch up, so no
        backlog spills into the other server's run."""
        before = cpu_seconds(self.process.pid)
        result = run.run_wrk(f"{self.base}/callback", prefix, t, sign)
        accepted = run.metric(self.base, 'recordhook_callbacks_total{outcome="accepted"}')
        stop = time.monotonic()
        while run.file_lines(self.records) < accepted and time.monotonic() - stop < run.LAG_LIMIT_SECS:
            time.sleep(0.01)
        result["cpu_us"] = (cpu_seconds(self.process.pid) - before) / result["requests"] * 1e6
        result["log_bytes"] = (self.dir / "recordhook.log").stat().st_size
        return result

    def stop(self):
        """Stops the server; returns (callbacks accepted, their `callback
        accepted` log lines), which differ if log lines were dropped."""
        accepted = run.metric(self.base, 'recordhook_callbacks_total{outcome="accepted"}')
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
        with open(self.dir / "recordhook.log", "rb") as f:
            logged = sum(1 for line in f if b'"message":"callback accepted"' in line)
        return int(accepted), logged


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    old_rev = sys.argv[1]
    new_rev = sys.argv[2] if len(sys.argv) == 3 else None
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="recordhook-logbench-"))
    old_binary = build(old_rev, work / "recordhook-old")
    new_binary = build(new_rev, work / "recordhook-new")

    key = "bench-" + os.urandom(8).hex()
    t = int(time.time()) + 3600
    sign = json.loads(subprocess.run([new_binary, "sign", "--key", key, "--t", str(t)],
                                     capture_output=True, text=True, check=True).stdout)["sign"]
    old = Server("old", old_binary, work, key)
    new = Server("new", new_binary, work, key)
    pairs = []
    try:
        time.sleep(0.3)
        for n in range(1, ROUNDS + 1):
            a = old.load(f"old{n}", t, sign)
            b = new.load(f"new{n}", t, sign)
            pairs.append((a, b))
            print(f"round {n}: old {a['rps']:.0f} req/s {a['cpu_us']:.1f} µs CPU/callback p99 {a['p99_us']/1000:.2f} ms | "
                  f"new {b['rps']:.0f} req/s {b['cpu_us']:.1f} µs CPU/callback p99 {b['p99_us']/1000:.2f} ms | "
                  f"new/old: req/s {b['rps']/a['rps']:.3f}, CPU/callback {b['cpu_us']/a['cpu_us']:.3f}", flush=True)
    finally:
        old_lines = old.stop()
        new_lines = new.stop()

    med = statistics.median
    rps = [b["rps"] / a["rps"] for a, b in pairs]
    cpu = [b["cpu_us"] / a["cpu_us"] for a, b in pairs]
    print()
    print(f"machine: {os.cpu_count()} cores; wrk -t{run.THREADS} -c{run.CONNECTIONS} -d{run.DURATION}s; "
          f"{ROUNDS} pairs, old = {old_rev}, new = {new_rev or 'working tree'}")
    print()
    print("| | old | new | new/old (median, min–max of the pairs) |")
    print("| --- | --- | --- | --- |")
    print(f"| requests/s (median) | {med(a['rps'] for a, _ in pairs):.0f} | {med(b['rps'] for _, b in pairs):.0f} | "
          f"{med(rps):.3f} ({min(rps):.3f}–{max(rps):.3f}) |")
    print(f"| CPU per callback (median) | {med(a['cpu_us'] for a, _ in pairs):.1f} µs | {med(b['cpu_us'] for _, b in pairs):.1f} µs | "
          f"{med(cpu):.3f} ({min(cpu):.3f}–{max(cpu):.3f}) |")
    print(f"| p99 latency (median) | {med(a['p99_us'] for a, _ in pairs)/1000:.2f} ms | {med(b['p99_us'] for _, b in pairs)/1000:.2f} ms | |")
    print(f"| log file after the run | {pairs[-1][0]['log_bytes']/1e6:.0f} MB | {pairs[-1][1]['log_bytes']/1e6:.0f} MB | |")
    print(f"| callbacks accepted / their log lines | {old_lines[0]} / {old_lines[1]} | {new_lines[0]} / {new_lines[1]} | |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

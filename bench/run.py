#!/usr/bin/env python3
"""recordhook benchmark: one command, `python3 bench/run.py`.

Alternates three servers under the same wrk load, ROUNDS times: the reference
(bench/reference_server.rs: reads the body, answers 200, nothing else), the
durable reference (bench/durable_reference_server.rs: the same, but appends
the body to a file and answers only after fdatasync, with group commit), and
recordhook (log and file sinks, every callback committed to the spool with
fsync before its 200). Reports requests per second, p50/p99 latency, the
ratios recordhook/reference and recordhook/durable reference, recordhook's
peak RSS, the delivery lag of the file sink after each load stops, and the
spool's size per 100k records.

Environment: DURATION (seconds per run, default 10), CONNECTIONS (32),
THREADS (wrk threads, 2), ROUNDS (3), LOG (`file`, the default: recordhook's
log goes to a file in the work directory, as a log shipper would have it;
`discard`: to /dev/null), BASELINE (path to another recordhook binary, e.g.
one built from an earlier commit: it runs beside the current one under the
same load in every round, the order of the two alternating, and is reported
in its own column, so a change is judged against its predecessor in the same
run), SINK (`file`, the default; `nats` or `rabbitmq`: the second sink
publishes to the local NATS JetStream / RabbitMQ instead of appending to a
file; its lag and throughput then count deliveries the broker confirmed,
and bench/broker_setup.rs creates and removes a stream or exchange and queue
for the run). Needs wrk (Debian package `wrk`).
Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
THREADS = int(os.environ.get("THREADS", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
LOG = os.environ.get("LOG", "file")
BASELINE = os.environ.get("BASELINE", "")
SINK = os.environ.get("SINK", "file")
# The stream (NATS) or exchange and queue (RabbitMQ) of this run.
BROKER_NAME = "RHBENCH" + os.urandom(4).hex().upper()
LAG_LIMIT_SECS = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, process, name):
    for _ in range(200):
        if process.poll() is not None:
            sys.exit(f"{name} exited early with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not become healthy")


def run_wrk(url, prefix, t, sign):
    env = dict(os.environ, BENCH_T=str(t), BENCH_SIGN=sign, BENCH_PREFIX=prefix)
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--timeout", "10s",
         "-s", str(ROOT / "bench" / "callback.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("BENCH "))
    fields = dict(kv.split("=") for kv in line.split()[1:])
    result = {k: int(v) for k, v in fields.items()}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["non2xx"] or result["socket_errors"]:
        print(f"  warning: {prefix}: {result['non2xx']} non-2xx, {result['socket_errors']} socket errors")
    return result


def metric(base, name):
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def file_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def archive_sink(records):
    """The second sink's table: a file, or a broker publishing to this run's stream or exchange."""
    if SINK == "nats":
        return f"""[[sinks]]
name = "archive"
type = "nats"
subject = "{BROKER_NAME}.{{event_type}}"
"""
    if SINK == "rabbitmq":
        return f"""[[sinks]]
name = "archive"
type = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
exchange = "{BROKER_NAME}"
routing_key = "css.{{event_type}}"
"""
    return f"""[[sinks]]
name = "archive"
type = "file"
path = "{records}"
# One file, so the lag is measured by counting its lines.
rotate_max_bytes = 0
rotate_daily = false
"""


class Recordhook:
    """One recordhook process with its own port, spool, file sink and log."""

    def __init__(self, binary, directory, key):
        directory.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.records = directory / "records.jsonl"
        config = directory / "recordhook.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{self.port}"
[auth]
max_validity_secs = 7200
[spool]
path = "{directory / 'spool.db'}"
[log]
format = "json"
level = "info"
[[sinks]]
name = "console"
type = "log"
{archive_sink(self.records)}""")
        self.log = open(os.devnull if LOG == "discard" else directory / "recordhook.log", "wb")
        self.process = subprocess.Popen([binary, "serve", "--config", config], cwd=directory, stdout=self.log,
                                        env=dict(os.environ, RECORDHOOK__AUTH__KEYS=key))
        self.name = str(binary)

    def wait_healthy(self):
        wait_healthy(f"{self.base}/healthz", self.process, self.name)

    def delivered(self):
        """Records the `archive` sink has delivered: lines in its file, or
        publishes the broker confirmed."""
        if SINK == "file":
            return file_lines(self.records)
        return metric(self.base, 'recordhook_deliveries_total{sink="archive",outcome="delivered"}')

    def measure(self, round_name, t, sign):
        """One wrk run, then how long the `archive` sink takes to catch up,
        and its delivery throughput over the load and the catch-up."""
        before = self.delivered()
        started = time.monotonic()
        result = run_wrk(f"{self.base}/callback", f"rh{round_name}-{self.port}", t, sign)
        accepted = metric(self.base, 'recordhook_callbacks_total{outcome="accepted"}')
        stop = time.monotonic()
        while self.delivered() < accepted and time.monotonic() - stop < LAG_LIMIT_SECS:
            time.sleep(0.01)
        done = time.monotonic()
        delivered = self.delivered()
        result["delivered_per_s"] = (delivered - before) / (done - started)
        return result, done - stop, accepted, delivered

    def terminate(self):
        self.process.terminate()

    def wait(self, timeout):
        self.process.wait(timeout=timeout)
        self.log.close()


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    if SINK not in ("file", "nats", "rabbitmq"):
        sys.exit(f"SINK must be file, nats or rabbitmq, not {SINK}")
    if SINK != "file" and BASELINE:
        sys.exit("BASELINE compares file-sink runs only")
    print("building release binaries ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                    "--bin", "recordhook", "--example", "reference_server",
                    "--example", "durable_reference_server", "--example", "broker_setup"],
                   cwd=ROOT, check=True)
    release = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    binary = release / "recordhook"
    reference_binary = release / "examples/reference_server"
    durable_binary = release / "examples/durable_reference_server"
    broker_setup = release / "examples/broker_setup"
    if SINK != "file":
        subprocess.run([broker_setup, SINK, "create", BROKER_NAME], check=True)

    work = Path(tempfile.mkdtemp(prefix="recordhook-bench-"))
    key = "bench-" + os.urandom(8).hex()
    t = int(time.time()) + 3600
    sign = json.loads(subprocess.run([binary, "sign", "--key", key, "--t", str(t)],
                                     capture_output=True, text=True, check=True).stdout)["sign"]
    ref_port, durable_port = free_port(), free_port()
    reference = subprocess.Popen([reference_binary, f"127.0.0.1:{ref_port}"], stdout=subprocess.DEVNULL)
    # Its file sits on the same disk as recordhook's spool.
    durable = subprocess.Popen([durable_binary, f"127.0.0.1:{durable_port}", work / "durable-reference.log"],
                               stdout=subprocess.DEVNULL)
    recordhook = Recordhook(binary, work / "current", key)
    baseline = Recordhook(Path(BASELINE).resolve(), work / "baseline", key) if BASELINE else None
    ref_base = f"http://127.0.0.1:{ref_port}"
    durable_base = f"http://127.0.0.1:{durable_port}"
    try:
        recordhook.wait_healthy()
        if baseline:
            baseline.wait_healthy()
        time.sleep(0.3)
        rounds = []
        for n in range(1, ROUNDS + 1):
            ref = run_wrk(f"{ref_base}/callback", f"ref{n}", t, sign)
            dur = run_wrk(f"{durable_base}/callback", f"dur{n}", t, sign)
            # The two recordhooks take turns going first.
            order = [recordhook, baseline] if n % 2 else [baseline, recordhook]
            measured = {id(rh): rh.measure(f"{n}", t, sign) for rh in order if rh}
            rh, lag, accepted, in_file = measured[id(recordhook)]
            base = measured[id(baseline)][0] if baseline else None
            rounds.append(dict(ref=ref, dur=dur, rh=rh, base=base, lag=lag, accepted=accepted, in_file=in_file))
            also = f" | baseline {base['rps']:.0f} req/s p99 {base['p99_us']/1000:.2f} ms ratio {base['rps']/dur['rps']:.2f}" if base else ""
            print(f"round {n}: reference {ref['rps']:.0f} req/s p50 {ref['p50_us']/1000:.2f} ms p99 {ref['p99_us']/1000:.2f} ms | "
                  f"durable reference {dur['rps']:.0f} req/s p50 {dur['p50_us']/1000:.2f} ms p99 {dur['p99_us']/1000:.2f} ms | "
                  f"recordhook {rh['rps']:.0f} req/s p50 {rh['p50_us']/1000:.2f} ms p99 {rh['p99_us']/1000:.2f} ms | "
                  f"ratios {rh['rps']/ref['rps']:.2f} / {rh['rps']/dur['rps']:.2f} | {SINK} sink caught up {lag:.2f} s after the load "
                  f"({int(in_file)}/{int(accepted)} delivered, {rh['delivered_per_s']:.0f} records/s){also}", flush=True)
        rss = peak_rss_kib(recordhook.process.pid)
        spool_bytes = metric(recordhook.base, "recordhook_spool_size_bytes")
        accepted = rounds[-1]["accepted"]
    finally:
        for process in [recordhook, baseline, reference, durable]:
            if process:
                process.terminate()
        for process in [recordhook, baseline, reference, durable]:
            if process:
                process.wait(timeout=30)
        if SINK != "file":
            subprocess.run([broker_setup, SINK, "delete", BROKER_NAME], check=False)

    med = statistics.median
    ratio = [r["rh"]["rps"] / r["ref"]["rps"] for r in rounds]
    durable_ratio = [r["rh"]["rps"] / r["dur"]["rps"] for r in rounds]
    ceiling = [r["dur"]["rps"] / r["ref"]["rps"] for r in rounds]

    def latency(key, pct, pick=med):
        return f"{pick(r[key][pct] for r in rounds)/1000:.2f} ms"

    print()
    print(f"machine: {os.cpu_count()} cores; wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s on the same machine; {ROUNDS} rounds; log: {LOG}; second sink: {SINK}")
    print()
    print("| | reference | durable reference | recordhook |")
    print("| --- | --- | --- | --- |")
    print(f"| requests/s (median) | {med(r['ref']['rps'] for r in rounds):.0f} | {med(r['dur']['rps'] for r in rounds):.0f} | {med(r['rh']['rps'] for r in rounds):.0f} |")
    print(f"| ratio to the reference (median, min) | 1 | {med(ceiling):.2f} ({min(ceiling):.2f}) | {med(ratio):.2f} ({min(ratio):.2f}) |")
    print(f"| ratio to the durable reference (median, min) | | 1 | {med(durable_ratio):.2f} ({min(durable_ratio):.2f}) |")
    print(f"| p50 latency (median) | {latency('ref', 'p50_us')} | {latency('dur', 'p50_us')} | {latency('rh', 'p50_us')} |")
    print(f"| p99 latency (median) | {latency('ref', 'p99_us')} | {latency('dur', 'p99_us')} | {latency('rh', 'p99_us')} |")
    print(f"| p99 latency (worst round) | {latency('ref', 'p99_us', max)} | {latency('dur', 'p99_us', max)} | {latency('rh', 'p99_us', max)} |")
    print(f"| peak RSS | | | {rss/1024:.1f} MiB |")
    print(f"| {SINK} sink lag after load (worst) | | | {max(r['lag'] for r in rounds):.2f} s |")
    print(f"| {SINK} sink delivery throughput, load + catch-up (median) | | | {med(r['rh']['delivered_per_s'] for r in rounds):.0f} records/s |")
    if baseline:
        base_ratio = [r["base"]["rps"] / r["dur"]["rps"] for r in rounds]
        versus = [r["rh"]["rps"] / r["base"]["rps"] for r in rounds]
        print(f"| baseline ({BASELINE}): requests/s (median) | | | {med(r['base']['rps'] for r in rounds):.0f} |")
        print(f"| baseline: ratio to the durable reference (median, min) | | | {med(base_ratio):.2f} ({min(base_ratio):.2f}) |")
        print(f"| baseline: p99 latency (median, worst round) | | | {latency('base', 'p99_us')} / {latency('base', 'p99_us', max)} |")
        print(f"| recordhook / baseline, requests/s (median, min) | | | {med(versus):.2f} ({min(versus):.2f}) |")
    print(f"| spool size per 100k records | | | {spool_bytes/accepted*100000/1024/1024:.1f} MiB ({int(accepted)} records, {spool_bytes/1024/1024:.1f} MiB) |")
    lost = [r for r in rounds if r["in_file"] < r["accepted"]]
    if lost:
        sys.exit(f"the {SINK} sink did not catch up within the limit")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

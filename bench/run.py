#!/usr/bin/env python3
"""recordhook benchmark: one command, `python3 bench/run.py`.

Alternates three servers under the same wrk load, ROUNDS times: the reference
(bench/reference_server.rs: reads the body, answers 200, nothing else), the
durable reference (bench/durable_reference_server.rs: the same, but appends
the body to a file and answers only after fdatasync, with group commit), and
recordhook (log and file sinks, every callback committed to the spool with
fsync before its 200). Reports requests per second, p50/p99 latency, the
ratios recordhook/reference and recordhook/durable reference, recordhook's
peak RSS, the bytes it wrote to storage per callback (/proc/PID/io), the delivery lag of the file sink after each load stops, the
spool's size per 100k records, and the CPU each callback cost (recordhook's,
and with wrk's and PostgreSQL's: what the machine needs per callback, a figure
other processes on a shared machine move less than requests per second),
beside the share of the machine that stayed idle or went to other processes
during each load.

Environment: DURATION (seconds per run, default 10), CONNECTIONS (32),
THREADS (wrk threads, 2), ROUNDS (3), LOG (`file`, the default: recordhook's
log goes to a file in the work directory, as a log shipper would have it;
`discard`: to /dev/null), BASELINE (path to another recordhook binary, e.g.
one built from an earlier commit: it runs beside the current one under the
same load in every round, the order of the two alternating, and is reported
in its own column, so a change is judged against its predecessor in the same
run), SINK (`file`, the default; `nats`, `rabbitmq` or `kafka`: the second
sink publishes to the local NATS JetStream / RabbitMQ, or to a tansu Kafka
broker this run starts on a free port with SQLite storage in its work
directory, instead of appending to a file; its lag and throughput then count
deliveries the broker confirmed, and bench/broker_setup.rs creates and
removes a stream, an exchange and queue, or a topic for the run), SPOOL (`sqlite`, the default; `postgres`: in every round, after
the SQLite recordhook or before it in turn, two recordhook replicas sharing a
PostgreSQL spool take the same load, its wrk threads split between them, and
are reported beside it with their ratio to it; the database is created fresh
for the run and dropped at the end), PG_URL (the PostgreSQL server for
SPOOL=postgres, without a database: postgres://postgres@127.0.0.1:5432 by
default), BINARY (a recordhook binary to measure instead of the one this
checkout builds: run once with it and once without for the modes BASELINE
refuses). Needs wrk (Debian package `wrk`), and psql for SPOOL=postgres.
Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
"""

import json
import os
import re
import resource
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
SPOOL = os.environ.get("SPOOL", "sqlite")
PG_URL = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
# This run's PostgreSQL database, created and dropped by the run.
PG_DATABASE = "rhbench_" + os.urandom(4).hex()
REPLICAS = 2
# The stream (NATS) or exchange and queue (RabbitMQ) of this run.
BROKER_NAME = "RHBENCH" + os.urandom(4).hex().upper()
LAG_LIMIT_SECS = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, process, name, attempts=200):
    for _ in range(attempts):
        if process.poll() is not None:
            sys.exit(f"{name} exited early with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not become healthy")


def run_wrk(url, prefix, t, sign, ports=()):
    """One wrk run; with `ports`, its threads take turns among those servers
    (thread i sends to the (i mod n)-th), one latency distribution over all."""
    env = dict(os.environ, BENCH_T=str(t), BENCH_SIGN=sign, BENCH_PREFIX=prefix,
               BENCH_PORTS=",".join(str(p) for p in ports))
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


def sign_with(binary, key, t):
    """The callback signature for `t` under `key`, as `recordhook sign` computes it."""
    return json.loads(subprocess.run([binary, "sign", "--key", key, "--t", str(t)],
                                     capture_output=True, text=True, check=True).stdout)["sign"]


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


def cpu_seconds(pids):
    """utime + stime of each of these processes, in seconds (none for one that is gone)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def written_bytes(pids):
    """Bytes these processes have had written to storage (`write_bytes` in
    /proc/PID/io: the spool, its WAL and checkpoints, the log, the file sink)."""
    total = 0
    for pid in pids:
        try:
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        total += int(io["write_bytes"])
    return total


def cpu_since(before, pids):
    """CPU seconds these processes used since `before` (from cpu_seconds);
    a process started since counts in full."""
    return sum(now - before.get(pid, 0) for pid, now in cpu_seconds(pids).items())


def postgres_pids():
    """The PostgreSQL processes that work for this run: the backends of its
    database and the server's own (WAL writer, checkpointer, ...), not the
    backends of other databases on a shared server."""
    return [int(pid) for [pid] in psql("""SELECT pid FROM pg_stat_activity
                                         WHERE datname = current_database() OR datname IS NULL""", PG_DATABASE)]


def idle_seconds():
    """The machine's idle time over all cores, in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def others_share(elapsed, idle, ours):
    """The share of the machine that processes other than ours took over
    `elapsed` seconds in which it was `idle` and ours used `ours` CPU seconds."""
    machine = os.cpu_count() * elapsed
    return max(0.0, machine - idle - ours) / machine


def psql(sql, database="postgres"):
    """Runs `sql` on the PostgreSQL server; its rows, fields split on |."""
    out = subprocess.run(["psql", f"{PG_URL}/{database}", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-c", sql], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def pg_counters():
    """The counters a PostgreSQL round is judged by: the last stored seq, this
    database's transactions, and the server's WAL (pg_stat_wal counts the
    whole server: writes to other databases meanwhile count too)."""
    row = psql(f"""SELECT (SELECT COALESCE(MAX(seq), 0) FROM records),
                          (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                          wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal""", PG_DATABASE)[0]
    return dict(zip(["seq", "xacts", "wal_records", "wal_fpi", "wal_bytes", "wal_write", "wal_sync"], map(int, row)))


def pg_batches(first, last):
    """How the records with seq in (first, last] were stored and settled:
    records per storing transaction (rows one statement wrote share its
    xmin), and rows per settling transaction of each sink."""
    stored = psql(f"""SELECT COUNT(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY n), MAX(n)
                      FROM (SELECT COUNT(*) AS n FROM records WHERE seq > {first} AND seq <= {last}
                            GROUP BY xmin::text) AS b""", PG_DATABASE)[0]
    settled = psql(f"""SELECT sink, COUNT(*)::float / COUNT(DISTINCT xmin::text) FROM deliveries
                       WHERE seq > {first} AND seq <= {last} GROUP BY sink ORDER BY sink""", PG_DATABASE)
    return dict(transactions=int(stored[0]), median=int(stored[1] or 0), max=int(stored[2] or 0),
                settled={sink: float(n) for sink, n in settled})


def status_kib(pid, field):
    """A size in KiB from /proc/PID/status (`VmHWM`, `VmRSS`, ...); 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid):
    return status_kib(pid, "VmHWM")


def postgres_spool(url):
    """The spool settings of a replica on the shared PostgreSQL database."""
    return f"""backend = "postgres"
[spool.postgres]
url = "{url}"
max_connections = 10
lease_secs = 30"""


def archive_sink(records):
    """The second sink's table: a file, or a broker publishing to this run's stream or exchange."""
    if SINK == "nats":
        return f"""[[sinks]]
name = "archive"
type = "nats"
subject = "{BROKER_NAME}.{{event_type}}"
"""
    if SINK == "kafka":
        return f"""[[sinks]]
name = "archive"
type = "kafka"
brokers = ["{os.environ['KAFKA_BROKER']}"]
topic = "{BROKER_NAME}.{{event_type}}"
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


def measure(replicas, round_name, t, sign):
    """One wrk run against these recordhooks (one, or the replicas of a shared
    spool, each taking the connections of every n-th wrk thread), then how
    long the `archive` sink takes to catch up, its delivery throughput over the
    load and the catch-up, and the CPU recordhook (and PostgreSQL) spent per
    callback over both."""
    pg = replicas[0].postgres
    before = sum(rh.delivered() for rh in replicas)
    accepted_before = [rh.accepted() for rh in replicas]
    pids = [rh.process.pid for rh in replicas]
    cpu_before, pg_cpu_before = cpu_seconds(pids), cpu_seconds(postgres_pids() if pg else [])
    written_before = written_bytes(pids)
    wrk_before, idle_before = resource.getrusage(resource.RUSAGE_CHILDREN), idle_seconds()
    started = time.monotonic()
    ports = [rh.port for rh in replicas] if len(replicas) > 1 else ()
    result = run_wrk(f"{replicas[0].base}/callback", f"rh{round_name}-{replicas[0].port}", t, sign, ports)
    stop = time.monotonic()
    # What the load left idle, and what processes other than this benchmark's took.
    machine = os.cpu_count() * (stop - started)
    idle_load = idle_seconds() - idle_before
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    ours = cpu_since(cpu_before, pids) + (cpu_since(pg_cpu_before, postgres_pids()) if pg else 0) + wrk_cpu
    result["idle"] = idle_load / machine
    result["others"] = others_share(stop - started, idle_load, ours)
    each = [rh.accepted() for rh in replicas]
    accepted = sum(each)
    while sum(rh.delivered() for rh in replicas) < accepted and time.monotonic() - stop < LAG_LIMIT_SECS:
        time.sleep(0.01)
    done = time.monotonic()
    delivered = sum(rh.delivered() for rh in replicas)
    new = accepted - sum(accepted_before)
    result["delivered_per_s"] = (delivered - before) / (done - started)
    result["cpu_us"] = cpu_since(cpu_before, pids) / new * 1e6
    result["written_b"] = (written_bytes(pids) - written_before) / new
    result["pg_cpu_us"] = cpu_since(pg_cpu_before, postgres_pids()) / new * 1e6 if pg else 0
    # Everything this benchmark ran per callback: what the machine would need
    # for it if nothing else ran (wrk counted per request it sent).
    result["total_us"] = result["cpu_us"] + result["pg_cpu_us"] + wrk_cpu / result["requests"] * 1e6
    result["split"] = [(a - b) / new for a, b in zip(each, accepted_before)]
    return result, done - stop, accepted, delivered


class Recordhook:
    """One recordhook process with its own port, spool (or a share of the
    PostgreSQL one), file sink and log."""

    def __init__(self, binary, directory, key, postgres=None, command_prefix=()):
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
{postgres_spool(postgres) if postgres else ""}
[log]
format = "json"
level = "info"
[[sinks]]
name = "console"
type = "log"
{archive_sink(self.records)}""")
        self.log = open(os.devnull if LOG == "discard" else directory / "recordhook.log", "wb")
        # command_prefix: a tool the process runs under (bench/callgrind.py's valgrind).
        self.process = subprocess.Popen([*command_prefix, binary, "serve", "--config", config], cwd=directory,
                                        stdout=self.log,
                                        env=dict(os.environ, RECORDHOOK__AUTH__KEYS=key))
        self.name = str(binary)
        self.postgres = postgres

    def wait_healthy(self):
        wait_healthy(f"{self.base}/healthz", self.process, self.name)

    def delivered(self):
        """Records the `archive` sink has delivered: lines in its file, or
        publishes the broker confirmed."""
        if SINK == "file":
            return file_lines(self.records)
        return metric(self.base, 'recordhook_deliveries_total{sink="archive",outcome="delivered"}')

    def accepted(self):
        return metric(self.base, 'recordhook_callbacks_total{outcome="accepted"}')

    def terminate(self):
        self.process.terminate()

    def wait(self, timeout):
        self.process.wait(timeout=timeout)
        self.log.close()


def start_tansu(work):
    """A tansu Kafka broker on a free port, storing in `work`; its address
    goes to KAFKA_BROKER for the sink's config and broker_setup."""
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        ["tansu", "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         # tansu reads the path relative to its working directory.
         "--storage-engine", "sqlite://tansu.db"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                sys.exit("tansu did not start")
            time.sleep(0.05)
    os.environ["KAFKA_BROKER"] = f"127.0.0.1:{port}"
    return process


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    if SINK not in ("file", "nats", "rabbitmq", "kafka"):
        sys.exit(f"SINK must be file, nats, rabbitmq or kafka, not {SINK}")
    if SINK == "kafka" and not shutil.which("tansu"):
        sys.exit("tansu not found: cargo install tansu --version 0.6.0 --locked --features libsql")
    if SINK != "file" and BASELINE:
        sys.exit("BASELINE compares file-sink runs only")
    if SPOOL not in ("sqlite", "postgres"):
        sys.exit(f"SPOOL must be sqlite or postgres, not {SPOOL}")
    postgres = SPOOL == "postgres"
    if postgres and BASELINE:
        sys.exit("BASELINE compares SQLite runs only")
    if postgres and THREADS % REPLICAS:
        sys.exit(f"SPOOL=postgres needs THREADS divisible by {REPLICAS}: each replica takes every other wrk thread")
    if postgres and not shutil.which("psql"):
        sys.exit("psql not found: apt-get install postgresql-client")
    print("building release binaries ...", flush=True)
    # With BINARY, this checkout's recordhook is not run: only the helpers
    # are built (the whole-program-optimised binary takes minutes).
    under_test = [] if os.environ.get("BINARY") else ["--bin", "recordhook"]
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", *under_test,
                    "--example", "reference_server",
                    "--example", "durable_reference_server", "--example", "broker_setup"],
                   cwd=ROOT, check=True)
    release = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    # BINARY: run another build (an earlier commit's) as the one under test,
    # for the modes BASELINE cannot run beside it (broker sinks, PostgreSQL).
    binary = Path(os.environ["BINARY"]).resolve() if os.environ.get("BINARY") else release / "recordhook"
    reference_binary = release / "examples/reference_server"
    durable_binary = release / "examples/durable_reference_server"
    broker_setup = release / "examples/broker_setup"
    work = Path(tempfile.mkdtemp(prefix="recordhook-bench-"))
    kafka = start_tansu(work) if SINK == "kafka" else None
    if SINK != "file":
        subprocess.run([broker_setup, SINK, "create", BROKER_NAME], check=True)
    if postgres:
        psql(f"CREATE DATABASE {PG_DATABASE}")

    key = "bench-" + os.urandom(8).hex()
    t = int(time.time()) + 3600
    sign = sign_with(binary, key, t)
    ref_port, durable_port = free_port(), free_port()
    reference = subprocess.Popen([reference_binary, f"127.0.0.1:{ref_port}"], stdout=subprocess.DEVNULL)
    # Its file sits on the same disk as recordhook's spool.
    durable = subprocess.Popen([durable_binary, f"127.0.0.1:{durable_port}", work / "durable-reference.log"],
                               stdout=subprocess.DEVNULL)
    recordhook = Recordhook(binary, work / "current", key)
    baseline = Recordhook(Path(BASELINE).resolve(), work / "baseline", key) if BASELINE else None
    # Each replica has its own file sink file; the file sink is single-writer,
    # so whichever replica holds its lease writes every record to its file.
    replicas = [Recordhook(binary, work / f"replica{i}", key, f"{PG_URL}/{PG_DATABASE}")
                for i in range(1, REPLICAS + 1)] if postgres else []
    ref_base = f"http://127.0.0.1:{ref_port}"
    durable_base = f"http://127.0.0.1:{durable_port}"
    servers = [rh for rh in [recordhook, baseline, *replicas] if rh]
    try:
        for rh in servers:
            rh.wait_healthy()
        time.sleep(0.3)
        rounds = []
        for n in range(1, ROUNDS + 1):
            ref = run_wrk(f"{ref_base}/callback", f"ref{n}", t, sign)
            dur = run_wrk(f"{durable_base}/callback", f"dur{n}", t, sign)
            # The recordhooks under test take turns going first.
            groups = [[rh] for rh in [recordhook, baseline] if rh] + ([replicas] if replicas else [])
            measured = {}
            for group in (groups if n % 2 else groups[::-1]):
                counters = pg_counters() if group is replicas else None
                measured[id(group[0])] = measure(group, f"{n}", t, sign)
                if counters:
                    # Backends report their statistics at most once a second.
                    time.sleep(1.5)
                    after = pg_counters()
                    pg_diag = {k: after[k] - counters[k] for k in after}
                    pg_diag.update(pg_batches(counters["seq"], after["seq"]))
            rh, lag, accepted, in_file = measured[id(recordhook)]
            base = measured[id(baseline)][0] if baseline else None
            pg = pg_lag = pg_diag_round = None
            pg_accepted = pg_in_file = 0
            if replicas:
                pg, pg_lag, pg_accepted, pg_in_file = measured[id(replicas[0])]
                pg_diag_round = pg_diag
            rounds.append(dict(ref=ref, dur=dur, rh=rh, base=base, lag=lag, accepted=accepted, in_file=in_file,
                               pg=pg, pg_lag=pg_lag, pg_accepted=pg_accepted, pg_in_file=pg_in_file,
                               pg_diag=pg_diag_round))
            also = f" | baseline {base['rps']:.0f} req/s p99 {base['p99_us']/1000:.2f} ms ratio {base['rps']/dur['rps']:.2f}" if base else ""
            print(f"round {n}: reference {ref['rps']:.0f} req/s p50 {ref['p50_us']/1000:.2f} ms p99 {ref['p99_us']/1000:.2f} ms | "
                  f"durable reference {dur['rps']:.0f} req/s p50 {dur['p50_us']/1000:.2f} ms p99 {dur['p99_us']/1000:.2f} ms | "
                  f"recordhook {rh['rps']:.0f} req/s p50 {rh['p50_us']/1000:.2f} ms p99 {rh['p99_us']/1000:.2f} ms, "
                  f"CPU {rh['cpu_us']:.0f} µs/callback ({rh['total_us']:.0f} µs with wrk), machine idle {rh['idle']:.0%}, other processes {rh['others']:.0%} | "
                  f"ratios {rh['rps']/ref['rps']:.2f} / {rh['rps']/dur['rps']:.2f} | {SINK} sink caught up {lag:.2f} s after the load "
                  f"({int(in_file)}/{int(accepted)} delivered, {rh['delivered_per_s']:.0f} records/s){also}", flush=True)
            if pg:
                d = pg_diag_round
                stored = d["seq"]
                settled = ", ".join(f"{sink} {rows:.1f}" for sink, rows in d["settled"].items())
                print(f"  PostgreSQL, {REPLICAS} replicas: {pg['rps']:.0f} req/s p50 {pg['p50_us']/1000:.2f} ms p99 {pg['p99_us']/1000:.2f} ms "
                      f"(split {' / '.join(f'{x:.2f}' for x in pg['split'])}) | ratio to SQLite {pg['rps']/rh['rps']:.2f} | "
                      f"{rh['total_us']/pg['total_us']:.2f} by CPU per callback | {SINK} sink caught up {pg_lag:.2f} s after the load ({int(pg_in_file)}/{int(pg_accepted)} delivered, "
                      f"{pg['delivered_per_s']:.0f} records/s) | CPU per callback: recordhook {pg['cpu_us']:.0f} µs, "
                      f"PostgreSQL {pg['pg_cpu_us']:.0f} µs, with wrk {pg['total_us']:.0f} µs, machine idle {pg['idle']:.0%}, other processes {pg['others']:.0%}", flush=True)
                print(f"    records per storing transaction {stored/d['transactions']:.1f} (median {d['median']}, max {d['max']}); "
                      f"rows per settling transaction: {settled}; per callback: {d['xacts']/stored:.2f} transactions, "
                      f"{d['wal_sync']/stored:.2f} WAL syncs, {d['wal_records']/stored:.1f} WAL records, "
                      f"{d['wal_bytes']/stored:.0f} WAL bytes ({d['wal_fpi']/stored:.2f} full pages)", flush=True)
        rss = peak_rss_kib(recordhook.process.pid)
        spool_bytes = metric(recordhook.base, "recordhook_spool_size_bytes")
        accepted = rounds[-1]["accepted"]
        pg_rss = [peak_rss_kib(rh.process.pid) for rh in replicas]
        base_rss = peak_rss_kib(baseline.process.pid) if baseline else 0
    finally:
        for process in [*servers, reference, durable]:
            process.terminate()
        for process in [*servers, reference, durable]:
            process.wait(timeout=30)
        if SINK != "file":
            subprocess.run([broker_setup, SINK, "delete", BROKER_NAME], check=False)
        if kafka:
            kafka.terminate()
            kafka.wait(timeout=30)
        try:
            if postgres and sys.exc_info()[0] is None:
                # Read once the replicas' sessions have ended and reported.
                pg_bytes = int(psql("SELECT pg_database_size(current_database())", PG_DATABASE)[0][0])
                pg_tables = psql("""SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
                                           pg_table_size(relid), pg_indexes_size(relid)
                                    FROM pg_stat_user_tables ORDER BY relname""", PG_DATABASE)
        finally:
            if postgres:
                psql(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")

    med = statistics.median
    ratio = [r["rh"]["rps"] / r["ref"]["rps"] for r in rounds]
    durable_ratio = [r["rh"]["rps"] / r["dur"]["rps"] for r in rounds]
    ceiling = [r["dur"]["rps"] / r["ref"]["rps"] for r in rounds]
    pg_column = f"recordhook, PostgreSQL, {REPLICAS} replicas" if postgres else ""

    def latency(key, pct, pick=med):
        return f"{pick(r[key][pct] for r in rounds)/1000:.2f} ms"

    def row(label, ref, dur, rh, pg=""):
        print(f"|{' ' + label if label else ''} | {ref} | {dur} | {rh} |" + (f" {pg} |" if postgres else ""))

    def ratios(key, to):
        values = [r[key]["rps"] / r[to]["rps"] for r in rounds]
        return f"{med(values):.2f} ({min(values):.2f})"

    print()
    print(f"machine: {os.cpu_count()} cores; wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s on the same machine; {ROUNDS} rounds; log: {LOG}; second sink: {SINK}; spool: {SPOOL}")
    print()
    row("", "reference", "durable reference", "recordhook" + (", SQLite" if postgres else ""), pg_column)
    row("---", "---", "---", "---", "---")
    row("requests/s (median)", f"{med(r['ref']['rps'] for r in rounds):.0f}", f"{med(r['dur']['rps'] for r in rounds):.0f}",
        f"{med(r['rh']['rps'] for r in rounds):.0f}", postgres and f"{med(r['pg']['rps'] for r in rounds):.0f}")
    row("ratio to the reference (median, min)", 1, f"{med(ceiling):.2f} ({min(ceiling):.2f})", f"{med(ratio):.2f} ({min(ratio):.2f})",
        postgres and ratios("pg", "ref"))
    row("ratio to the durable reference (median, min)", "", 1, f"{med(durable_ratio):.2f} ({min(durable_ratio):.2f})",
        postgres and ratios("pg", "dur"))
    if postgres:
        row("ratio to recordhook with SQLite, same round (median, min)", "", "", 1, ratios("pg", "rh"))
    row("p50 latency (median)", latency('ref', 'p50_us'), latency('dur', 'p50_us'), latency('rh', 'p50_us'),
        postgres and latency('pg', 'p50_us'))
    row("p99 latency (median)", latency('ref', 'p99_us'), latency('dur', 'p99_us'), latency('rh', 'p99_us'),
        postgres and latency('pg', 'p99_us'))
    row("p99 latency (worst round)", latency('ref', 'p99_us', max), latency('dur', 'p99_us', max), latency('rh', 'p99_us', max),
        postgres and latency('pg', 'p99_us', max))
    row("recordhook CPU per callback (median)", "", "", f"{med(r['rh']['cpu_us'] for r in rounds):.0f} µs",
        postgres and f"{med(r['pg']['cpu_us'] for r in rounds):.0f} µs (+ PostgreSQL {med(r['pg']['pg_cpu_us'] for r in rounds):.0f} µs)")
    row(f"CPU per callback, everything the benchmark runs: recordhook, {'PostgreSQL, ' if postgres else ''}wrk (median)", "", "",
        f"{med(r['rh']['total_us'] for r in rounds):.0f} µs", postgres and f"{med(r['pg']['total_us'] for r in rounds):.0f} µs")
    if postgres:
        cost = [r["rh"]["total_us"] / r["pg"]["total_us"] for r in rounds]
        row("ratio to recordhook with SQLite by CPU per callback, same round (median, min)", "", "", 1,
            f"{med(cost):.2f} ({min(cost):.2f})")
    row("machine idle / other processes' share during the load (median)", "", "",
        f"{med(r['rh']['idle'] for r in rounds):.0%} / {med(r['rh']['others'] for r in rounds):.0%}",
        postgres and f"{med(r['pg']['idle'] for r in rounds):.0%} / {med(r['pg']['others'] for r in rounds):.0%}")
    row("bytes written to storage per callback: spool, log, sinks (median)", "", "",
        f"{med(r['rh']['written_b'] for r in rounds):.0f} B", postgres and f"{med(r['pg']['written_b'] for r in rounds):.0f} B")
    row("peak RSS", "", "", f"{rss/1024:.1f} MiB", postgres and " / ".join(f"{kib/1024:.1f}" for kib in pg_rss) + " MiB")
    row(f"{SINK} sink lag after load (worst)", "", "", f"{max(r['lag'] for r in rounds):.2f} s",
        postgres and f"{max(r['pg_lag'] for r in rounds):.2f} s")
    row(f"{SINK} sink delivery throughput, load + catch-up (median)", "", "", f"{med(r['rh']['delivered_per_s'] for r in rounds):.0f} records/s",
        postgres and f"{med(r['pg']['delivered_per_s'] for r in rounds):.0f} records/s")
    if baseline:
        base_ratio = [r["base"]["rps"] / r["dur"]["rps"] for r in rounds]
        versus = [r["rh"]["rps"] / r["base"]["rps"] for r in rounds]
        print(f"| baseline ({BASELINE}): requests/s (median) | | | {med(r['base']['rps'] for r in rounds):.0f} |")
        print(f"| baseline: ratio to the durable reference (median, min) | | | {med(base_ratio):.2f} ({min(base_ratio):.2f}) |")
        print(f"| baseline: p99 latency (median, worst round) | | | {latency('base', 'p99_us')} / {latency('base', 'p99_us', max)} |")
        print(f"| recordhook / baseline, requests/s (median, min) | | | {med(versus):.2f} ({min(versus):.2f}) |")
        print(f"| baseline: CPU per callback (median) | | | {med(r['base']['cpu_us'] for r in rounds):.0f} µs |")
        print(f"| baseline: bytes written per callback (median) | | | {med(r['base']['written_b'] for r in rounds):.0f} B |")
        print(f"| baseline: peak RSS | | | {base_rss/1024:.1f} MiB |")
    pg_accepted = rounds[-1]["pg_accepted"]
    row("spool size per 100k records", "", "", f"{spool_bytes/accepted*100000/1024/1024:.1f} MiB ({int(accepted)} records, {spool_bytes/1024/1024:.1f} MiB)",
        postgres and f"{pg_bytes/pg_accepted*100000/1024/1024:.1f} MiB ({int(pg_accepted)} records, {pg_bytes/1024/1024:.1f} MiB: the whole database)")
    if postgres:
        print()
        print(f"PostgreSQL tables after the run ({int(pg_accepted)} records):")
        print()
        print("| table | rows inserted | updated | of which HOT | deleted | heap | indexes |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, ins, upd, hot, dele, heap, idx in pg_tables:
            print(f"| {name} | {ins} | {upd} | {hot} | {dele} | {int(heap)/1024/1024:.1f} MiB | {int(idx)/1024/1024:.1f} MiB |")
    lost = [r for r in rounds if r["in_file"] < r["accepted"] or r["pg_in_file"] < r["pg_accepted"]]
    if lost:
        sys.exit(f"the {SINK} sink did not catch up within the limit")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

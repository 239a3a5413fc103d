#!/usr/bin/env python3
"""recordhook soak: a steady load for a long time, to see memory and CPU stay flat.

Starts recordhook as bench/run.py does (SQLite spool, log and file sinks),
finds its maximum rate with a 10 s wrk burst unless RATE is given, then sends
signed recording callbacks at half of it (wrk, each connection pausing between
requests) for MINUTES, and every INTERVAL seconds prints one table row: the
callbacks/s accepted in the interval, recordhook's CPU per callback in it,
its resident memory, the spool's size, the file sink's backlog and the share
of the machine other processes took (their CPU inflates recordhook's). At the
end it compares the last interval with the first: RSS and CPU per callback
should not drift.

The spool's windows are the configured ones: with the defaults (dedup 7 days,
retention 1 day) nothing is forgotten or purged within the soak, so memory
grows with the ids held (README "Memory for deduplication"). To see the
steady state, shorten both through the environment, e.g.
RECORDHOOK__SPOOL__DEDUP_WINDOW_SECS=300 RECORDHOOK__SPOOL__RETENTION_SECS=300.

Environment: MINUTES (default 30), INTERVAL (seconds, default 60), RATE
(callbacks/s aimed at, from below: each connection's pause does not
count its answer's latency; default half the measured maximum), CONNECTIONS (default 16),
LOG (as bench/run.py). Needs wrk. Traffic goes to 127.0.0.1 only and stops
after MINUTES.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the server, signing and metric helpers)

MINUTES = float(os.environ.get("MINUTES", "30"))
INTERVAL = int(os.environ.get("INTERVAL", "60"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))


def paced_script(work):
    """callback.lua plus a pause before each request (BENCH_DELAY_MS)."""
    script = work / "paced.lua"
    script.write_text(f'dofile("{run.ROOT / "bench" / "callback.lua"}")\n'
                      'local pause = tonumber(os.getenv("BENCH_DELAY_MS"))\n'
                      'function delay() return pause end\n')
    return script


def main():
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "recordhook"],
                   cwd=run.ROOT, check=True)
    binary = Path(os.environ.get("CARGO_TARGET_DIR", run.ROOT / "target")) / "release" / "recordhook"
    work = Path(tempfile.mkdtemp(prefix="recordhook-soak-"))
    key = "soak-" + os.urandom(8).hex()
    t = int(time.time()) + int(MINUTES * 60) + 3600
    sign = run.sign_with(binary, key, t)
    server = run.Recordhook(binary, work / "server", key)
    load = None
    try:
        server.wait_healthy()
        rate = float(os.environ.get("RATE", "0"))
        if not rate:
            run.DURATION, run.THREADS, run.CONNECTIONS = 10, 2, 32
            burst = run.run_wrk(f"{server.base}/callback", "burst", t, sign)
            rate = burst["rps"] / 2
            print(f"maximum {burst['rps']:.0f} callbacks/s over 10 s; soaking at {rate:.0f}/s", flush=True)
        pause_ms = max(1, round(CONNECTIONS * 1000 / rate))
        env = dict(os.environ, BENCH_T=str(t), BENCH_SIGN=sign, BENCH_PREFIX="soak",
                   BENCH_DELAY_MS=str(pause_ms), BENCH_PORTS="")
        load = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{int(MINUTES * 60)}s", "--timeout", "10s",
                                 "-s", str(paced_script(work)), f"{server.base}/callback"],
                                env=env, stdout=subprocess.PIPE, text=True)
        pid = server.process.pid
        print(f"\n{CONNECTIONS} connections, {pause_ms} ms between each one's requests; {MINUTES:g} minutes\n")
        print("| minute | callbacks/s | CPU per callback | RSS | spool | file sink backlog | other processes |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        rows = []
        accepted, cpu = server.accepted(), run.cpu_seconds([pid])
        ours, idle = run.cpu_seconds([pid, load.pid]), run.idle_seconds()
        started = time.monotonic()
        while load.poll() is None:
            time.sleep(INTERVAL)
            now_accepted = server.accepted()
            used = run.cpu_since(cpu, [pid])
            cpu = run.cpu_seconds([pid])
            # Whatever was neither idle nor recordhook nor wrk.
            others = run.others_share(INTERVAL, run.idle_seconds() - idle, run.cpu_since(ours, [pid, load.pid]))
            ours, idle = run.cpu_seconds([pid, load.pid]), run.idle_seconds()
            count = now_accepted - accepted
            accepted = now_accepted
            row = dict(minute=(time.monotonic() - started) / 60, rate=count / INTERVAL,
                       cpu_us=used / count * 1e6 if count else 0.0, rss=run.status_kib(pid, "VmRSS") / 1024,
                       spool=run.metric(server.base, "recordhook_spool_size_bytes") / 1024 / 1024,
                       backlog=0, others=others)
            # Delivered first: read the other way round, records accepted
            # in between would make the backlog negative.
            delivered = server.delivered()
            row["backlog"] = server.accepted() - delivered
            rows.append(row)
            print(f"| {row['minute']:.1f} | {row['rate']:.0f} | {row['cpu_us']:.0f} µs | {row['rss']:.1f} MiB | "
                  f"{row['spool']:.1f} MiB | {row['backlog']:.0f} | {row['others']:.0%} |", flush=True)
        full = [r for r in rows if r["rate"] > 0]
        if len(full) >= 2:
            first, last = full[0], full[-1]
            print(f"\nlast / first interval: RSS {last['rss'] / first['rss']:.2f}, "
                  f"CPU per callback {last['cpu_us'] / first['cpu_us']:.2f}")
    finally:
        if load and load.poll() is None:
            load.terminate()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

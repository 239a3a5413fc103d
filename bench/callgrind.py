#!/usr/bin/env python3
"""Instructions per callback, counted by valgrind's callgrind: a measure that
does not move with whatever else the machine is doing.

    python3 bench/callgrind.py            # 2,000 callbacks
    CALLBACKS=500 TOP=30 python3 bench/callgrind.py

Runs the release recordhook under `valgrind --tool=callgrind` twice with the
benchmark's configuration (bench/run.py: SQLite spool, a log sink and a file
sink): once receiving CALLBACKS signed recording callbacks, sent one after
another over one keep-alive connection, each waiting until the file sink has
them all, and once receiving none. The difference, divided by CALLBACKS, is
what one callback costs from its request to its last delivery, start-up and
shutdown excluded. Then prints the TOP functions by their own instructions
in the run with callbacks (`callgrind_annotate`), as shares of that run. KEEP=1 keeps the callgrind output.

BASELINE (path to another recordhook binary) measures it too, in the same
way, and prints the ratio. Sequential sends commit one callback per
transaction, which makes each one dearer than under wrk's concurrent load;
compare runs of this script with each other, not with bench/run.py.
Needs valgrind (Debian package `valgrind`).
"""

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's helpers: Recordhook, its config)

CALLBACKS = int(os.environ.get("CALLBACKS", "2000"))
TOP = int(os.environ.get("TOP", "25"))
BASELINE = os.environ.get("BASELINE", "")
# KEEP=1 keeps the work directory, with the callgrind output for a closer look.
KEEP = os.environ.get("KEEP", "") not in ("", "0")
# callgrind runs the program some fifty times slower than natively.
SLOW_TIMEOUT_SECS = 600

BODY = ('{{"event_type":100,"appid":12345678,"app":"push.example.com","appname":"live",'
        '"stream_id":"bench_stream","channel_id":"bench_stream","file_id":"cg-{n}",'
        '"record_file_id":"cg-{n}","file_format":"mp4","task_id":"","start_time":1642089445,'
        '"end_time":1642089598,"start_time_usec":316441,"end_time_usec":618577,"duration":154,'
        '"file_size":277941079,"stream_param":"stream_param=test",'
        '"video_url":"http://12345678.vod2.myqcloud.com/xxxx/yyyy/zzzz.mp4",'
        '"media_start_time":135802,"record_bps":0,'
        '"callback_ext":"{{\\"video_codec\\":\\"h264\\",\\"resolution\\":\\"640x480\\"}}",'
        '"sign":"{sign}","t":{t}}}')


def send(port, count, t, sign):
    """POSTs `count` distinct signed callbacks one after another; each must get 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SLOW_TIMEOUT_SECS)
    for n in range(count):
        connection.request("POST", "/callback", BODY.format(n=n, sign=sign, t=t),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"callback {n} answered {response.status}")
    connection.close()


def profile(binary, directory, key, t, sign, count):
    """Total instructions of one recordhook run under callgrind that receives
    `count` callbacks and delivers them all; the callgrind output's path."""
    out = directory / "callgrind.out"
    rh = run.Recordhook(binary, directory, key,
                        command_prefix=["valgrind", "--tool=callgrind", "--quiet",
                                        f"--callgrind-out-file={out}"])
    try:
        run.wait_healthy(f"{rh.base}/healthz", rh.process, rh.name, attempts=SLOW_TIMEOUT_SECS * 20)
        send(rh.port, count, t, sign)
        deadline = time.monotonic() + SLOW_TIMEOUT_SECS
        while run.file_lines(rh.records) < count:
            if time.monotonic() > deadline:
                sys.exit(f"{directory.name}: the file sink did not deliver {count} records in time")
            time.sleep(0.1)
    finally:
        rh.terminate()
        rh.wait(SLOW_TIMEOUT_SECS)
    if rh.process.returncode != 0:
        sys.exit(f"{directory.name}: recordhook exited with {rh.process.returncode}")
    text = out.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if not match:
        sys.exit(f"{out}: no instruction total")
    return int(match.group(1)), out


def per_callback(binary, work, name, key, t, sign):
    idle, _ = profile(binary, work / f"{name}-idle", key, t, sign, 0)
    busy, out = profile(binary, work / f"{name}-busy", key, t, sign, CALLBACKS)
    return (busy - idle) / CALLBACKS, busy, out


def top_functions(out, total):
    """The TOP functions by their own instructions, as (share, name)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", f"--threshold=100", str(out)],
                          capture_output=True, text=True, check=True).stdout
    rows = []
    for line in text.splitlines():
        match = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.+)$", line)
        if match and ":" in match.group(2) and "PROGRAM TOTALS" not in line:
            rows.append((int(match.group(1).replace(",", "")) / total, match.group(2).strip()))
    return rows[:TOP]


def main():
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install valgrind")
    print("building the release binary ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "recordhook"],
                   cwd=run.ROOT, check=True)
    binary = Path(os.environ.get("CARGO_TARGET_DIR", run.ROOT / "target")) / "release" / "recordhook"
    work = Path(tempfile.mkdtemp(prefix="recordhook-callgrind-"))
    key = "bench-" + os.urandom(8).hex()
    t = int(time.time()) + 3600
    sign = run.sign_with(binary, key, t)
    print(f"{CALLBACKS} sequential callbacks under callgrind (work directory {work}) ...", flush=True)
    current, total, out = per_callback(binary, work, "current", key, t, sign)
    print(f"recordhook: {current:,.0f} instructions per callback")
    if BASELINE:
        base, _, _ = per_callback(Path(BASELINE).resolve(), work, "baseline", key, t, sign)
        print(f"baseline:   {base:,.0f} instructions per callback; current / baseline {current / base:.2f}")
    print(f"\ntop {TOP} functions by own instructions, share of the run with callbacks ({total:,} in all):")
    for share, name in top_functions(out, total):
        print(f"  {share:6.1%}  {name[:150]}")
    if KEEP:
        print(f"\ncallgrind output kept: {out} (callgrind_annotate --tree=caller {out})")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Brings up deploy/compose.yaml with podman-compose (from PyPI, in a
# virtualenv under the cache) and the override docker/compose.ci.yaml: two
# recordhook replicas on one PostgreSQL, behind Caddy. Sends signed
# callbacks through Caddy, stops recordhook-2 a third of the way
# (`podman-compose stop`, SIGTERM) while they keep coming, and checks that
# every callback is answered 200 (recordhook-2 turns /readyz to 503 before
# its port closes, server.shutdown_delay_secs), that
# every callback answered 200 reached the log sink exactly once, counted
# per callback across both replicas' logs, and that the database holds it
# with nothing left to deliver. Prints the figures: sent, answered 200,
# delivered, duplicates.
# It never skips: whatever cannot run (no root, no apt, no podman) fails it,
# under CI=true as anywhere.
#
# Run by .ci/run after docker/container-test.sh (which builds the image; if
# it is missing this script builds it the same way); locally:
# `sudo bash docker/compose-test.sh`. Podman is set up as in
# docker/standins.sh: CONTAINERS_CONF names a containers.conf with runtime
# runc, which podman-compose's podman calls read too.
#
# Podman 4.3 (Debian bookworm) has no `podman wait --condition=healthy`, so
# podman-compose ignores `condition: service_healthy` (it warns) and would
# start the replicas before PostgreSQL accepts connections; this script
# starts PostgreSQL first and waits for it. Healthchecks run only when asked
# here (no systemd timers), so readiness is waited for with
# `podman healthcheck run`.
set -euo pipefail
cd "$(dirname "$0")/.."
script_name="compose-test"
source docker/standins.sh

podman_compose_version=1.6.0
project=recordhook-ci
callbacks=${COMPOSE_TEST_CALLBACKS:-300}
work=$(mktemp -d)
compose() {
  "$ci_cache/podman-compose/bin/podman-compose" -p "$project" \
    -f deploy/compose.yaml -f "$work/compose.ci.yaml" "$@"
}
# Every service's whole log, kept after the run (for a failure).
logs=target/compose-test
save_logs() {
  mkdir -p "$logs"
  for service in postgres recordhook-1 recordhook-2 caddy; do
    podman logs "$(container_of "$service")" >"$logs/$service.log" 2>&1 || true
  done
}
# The project's anonymous volumes (the image VOLUMEs nothing names: the
# replicas' /var/lib/recordhook, Caddy's /config), which `podman-compose
# down -v` leaves behind.
anonymous_volumes() {
  podman ps -a --filter "label=com.docker.compose.project=$project" --format '{{.ID}}' \
    | xargs -r podman inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' \
    | tr ' ' '\n' | grep -E '^[0-9a-f]{64}$' || true
}
down() {
  local volumes
  volumes=$(anonymous_volumes)
  compose down -v -t 30 >/dev/null 2>&1 || return 1
  if [[ -n $volumes ]]; then
    # shellcheck disable=SC2086
    podman volume rm -f $volumes >/dev/null || return 1
  fi
}
cleanup() {
  local status=$?
  if [[ -n ${compose_up:-} ]]; then
    save_logs
    if [[ $status -ne 0 ]]; then
      echo "$script_name: the services' logs are in $logs; their last lines:" >&2
      for service in postgres recordhook-1 recordhook-2 caddy; do
        echo "--- $service" >&2
        tail -n 10 "$logs/$service.log" | cut -c1-400 >&2
      done
    fi
    down || true
  fi
  rm -rf "$work"
  if [[ $status -ne 0 ]]; then
    echo "$script_name: FAILED (exit $status)" >&2
  fi
}
trap cleanup EXIT

# The container podman-compose made for service $1.
container_of() {
  podman ps -a --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}

healthy() {
  local container
  container=$(container_of "$1")
  [[ -n $container ]] && podman healthcheck run "$container" >/dev/null 2>&1
}

phase "podman, podman-compose $podman_compose_version"
setup_podman
apt_install python3-venv
if [[ ! -x $ci_cache/podman-compose/bin/podman-compose ]] \
  || [[ $("$ci_cache/podman-compose/bin/pip" show podman-compose 2>/dev/null | awk '/^Version:/ {print $2}') != "$podman_compose_version" ]]; then
  rm -rf "$ci_cache/podman-compose"
  python3 -m venv "$ci_cache/podman-compose" || fail "python3 -m venv failed"
  "$ci_cache/podman-compose/bin/pip" install -q "podman-compose==$podman_compose_version" \
    || fail "pip install podman-compose==$podman_compose_version failed"
fi

phase "images: recordhook, and the postgres:15 and caddy:2 stand-ins"
builder_standin
runtime_standin
build_image localhost/recordhook:ci
postgres_standin
caddy_standin

phase "podman-compose up"
CADDY_PORT=$(free_port)
sed "s/CADDY_PORT/$CADDY_PORT/" docker/compose.ci.yaml >"$work/compose.ci.yaml"
export POSTGRES_PASSWORD RECORDHOOK_KEYS
POSTGRES_PASSWORD=$(openssl rand -hex 24)
RECORDHOOK_KEYS=$(openssl rand -hex 16)
# A previous run cut short may have left its project behind.
down || true
compose_up=1
# PostgreSQL first, as `condition: service_healthy` would have it (see the
# top): replicas started before it accepts connections exit 1 and are
# restarted, and podman 4.3 then fails to start Caddy, which requires them,
# while one is between two runs.
compose up -d --no-build postgres >"$work/up.log" 2>&1 || {
  cat "$work/up.log" >&2
  fail "podman-compose up postgres failed"
}
eventually 120 healthy postgres || fail "postgres did not turn healthy within 120 s"
compose up -d --no-build >>"$work/up.log" 2>&1 || {
  cat "$work/up.log" >&2
  fail "podman-compose up failed"
}
for service in recordhook-1 recordhook-2; do
  eventually 120 healthy "$service" || fail "$service did not turn healthy within 120 s"
done
echo "$script_name: postgres, recordhook-1 and recordhook-2 are healthy; Caddy on 127.0.0.1:$CADDY_PORT"
url="http://127.0.0.1:$CADDY_PORT/callback"
# Caddy probes /readyz every 5 s: wait until it forwards a callback at all.
podman run --rm --no-healthcheck localhost/recordhook:ci sign --key "$RECORDHOOK_KEYS" >"$work/sign.json" \
  || fail "recordhook sign failed"
reaches() { curl -s -o /dev/null -w '%{http_code}' -X POST "$url" -H 'content-type: application/json' \
  -d "$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({"event_type":0,"stream_id":"compose-probe","t":s["t"],"sign":s["sign"]}))' "$work/sign.json")" \
  | grep -q '^200$'; }
eventually 60 reaches || fail "no callback reached a replica through Caddy within 60 s"

phase "callbacks through Caddy; recordhook-2 stopped a third of the way"
run_id=$(date +%s)-$RANDOM
# The callbacks are sent from Python, signed with one (t, sign) pair from
# the image's `recordhook sign` (valid for ten minutes, as CSS's are).
python3 - "$url" "$work/sign.json" "$callbacks" "$run_id" "$work/results.json" "$work/stopped" <<'PY' &
import json, os, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
url, sign_file, count, run_id, out, stopped = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
signed = json.load(open(sign_file))
def send(i):
    sent_at = time.time()
    stream = f"compose-{run_id}-{i}"
    body = {"event_type": 100, "appid": 1000000, "app": "push.example.com", "appname": "live",
            "stream_id": stream, "channel_id": stream, "file_id": f"file-{stream}",
            "record_file_id": f"file-{stream}", "file_format": "mp4", "start_time": 1764800000,
            "end_time": 1764800060, "duration": 60, "file_size": 1048576,
            "video_url": f"https://example.invalid/{stream}.mp4",
            "t": signed["t"], "sign": signed["sign"]}
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except Exception as err:
        status = f"error: {err}"
    return {"stream": stream, "status": status, "sent_at": sent_at,
            "after_stop": os.path.exists(stopped)}
results = []
with ThreadPoolExecutor(4) as pool:
    futures = []
    for i in range(count):
        futures.append(pool.submit(send, i))
        time.sleep(0.05)
    results = [f.result() for f in futures]
json.dump(results, open(out, "w"))
PY
sender=$!
# A third of the way: a third of the callbacks sent (each one 50 ms apart),
# so that many are sent well after the stop.
sleep "$(python3 -c "print($callbacks * 0.05 / 3)")"
stop_started=$SECONDS
compose stop recordhook-2 >"$work/stop.log" 2>&1 || {
  cat "$work/stop.log" >&2
  fail "podman-compose stop recordhook-2 failed"
}
touch "$work/stopped"
replica2=$(container_of recordhook-2)
code=$(podman inspect --format '{{.State.ExitCode}}' "$replica2")
[[ $code -eq 0 ]] || fail "recordhook-2 exited $code on SIGTERM, not 0"
echo "$script_name: recordhook-2 stopped in $((SECONDS - stop_started)) s, exit code 0"
wait "$sender" || fail "the sender failed"

phase "every 200 delivered exactly once"
for service in recordhook-1 recordhook-2; do
  podman logs "$(container_of "$service")" >"$work/$service.log" 2>&1
done
# Waits (up to 60 s) until the log sink of one replica or the other has
# logged every callback answered 200, then counts.
check() {
  podman logs "$(container_of recordhook-1)" >"$work/recordhook-1.log" 2>&1
  python3 - "$work" "$run_id" <<'PY'
import collections, json, sys
work, run_id = sys.argv[1], sys.argv[2]
results = json.load(open(f"{work}/results.json"))
delivered = collections.Counter()
accepted = collections.Counter()
for replica in ("recordhook-1", "recordhook-2"):
    for line in open(f"{work}/{replica}.log", errors="replace"):
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        stream = entry.get("stream_id", "")
        if not stream.startswith(f"compose-{run_id}-"):
            continue
        if entry.get("message") == "record":
            delivered[stream] += 1
        elif entry.get("outcome") == "accepted":
            accepted[replica] += 1
ok = [r["stream"] for r in results if r["status"] == 200]
other = collections.Counter(str(r["status"]) for r in results if r["status"] != 200)
missing = [s for s in ok if delivered[s] == 0]
twice = {s: n for s, n in delivered.items() if n > 1}
after_stop = sum(1 for r in results if r["after_stop"])
summary = (f"sent {len(results)} ({after_stop} after recordhook-2 stopped), answered 200: {len(ok)}, "
           f"other answers: {dict(other) or 'none'}; delivered: {len(delivered)}, duplicates: "
           f"{sum(n - 1 for n in twice.values())}; accepted by recordhook-1: {accepted['recordhook-1']}, "
           f"by recordhook-2: {accepted['recordhook-2']}")
open(f"{work}/summary", "w").write(summary)
if missing:
    print(f"{len(missing)} callbacks answered 200 not delivered yet, e.g. {missing[:3]}", file=sys.stderr)
    sys.exit(1)
if twice:
    print(f"delivered more than once: {twice}", file=sys.stderr)
    sys.exit(2)
sys.exit(0)
PY
}
status=0
eventually 60 check 2>"$work/check.err" || status=1
if [[ $status -ne 0 ]]; then
  check || status=$?
  fail "$(cat "$work/summary" 2>/dev/null): $(tail -1 "$work/check.err")"
fi
summary=$(cat "$work/summary")
echo "$script_name: $summary"
grep -q 'by recordhook-2: 0$' "$work/summary" \
  && fail "recordhook-2 accepted no callback before it stopped: the test did not exercise it"
sent_ok=$(python3 -c 'import json,sys; print(sum(r["status"] == 200 for r in json.load(open(sys.argv[1]))))' "$work/results.json")
# recordhook-2 is told to stop with server.shutdown_delay_secs = 3
# (config/replicas.toml): its /readyz answers 503 at once while it still
# serves callbacks, so Caddy's probe (every second) takes it out of rotation
# before its port closes. No callback may then fail: every one, before,
# during and after the stop, must be answered 200 (before that delay
# existed, 2 to 11 of 300 got 502 from Caddy in the switch).
read -r failed late_ok < <(python3 - "$work/results.json" "$(stat -c %Y "$work/stopped")" <<'PY'
import json, sys
results, stopped_at = json.load(open(sys.argv[1])), float(sys.argv[2])
late = [r for r in results if r["sent_at"] > stopped_at + 3]
print(sum(r["status"] != 200 for r in results), sum(r["status"] == 200 for r in late))
PY
)
[[ $failed -eq 0 ]] || fail "$failed callbacks were not answered 200 while recordhook-2 drained and stopped"
((late_ok > 0)) || fail "no callback was sent more than 3 s after recordhook-2 stopped: send more"

# The database agrees: every callback answered 200 is stored, nothing is
# left to deliver.
postgres=$(container_of postgres)
stored=$(podman exec "$postgres" psql -U recordhook -d recordhook -tAc \
  "SELECT count(*) FROM records WHERE body LIKE '%\"compose-$run_id-%'" 2>&1) \
  || fail "psql: $stored"
pending=$(podman exec "$postgres" psql -U recordhook -d recordhook -tAc \
  "SELECT count(*) FROM deliveries WHERE state <> 'delivered'" 2>&1) || fail "psql: $pending"
echo "$script_name: PostgreSQL: $stored records of this run stored, $pending deliveries not delivered"
((stored >= sent_ok)) || fail "PostgreSQL holds $stored records of this run, fewer than the $sent_ok answered 200"
[[ $pending -eq 0 ]] || fail "$pending deliveries are not delivered"

phase "podman-compose down"
save_logs
compose_up=
down || fail "podman-compose down (or removing its anonymous volumes) failed"

phase "done"
echo "$script_name: OK ($SECONDS s in all): $summary"

#!/usr/bin/env bash
# Builds the project's Dockerfile, unchanged, with podman against local
# stand-ins for its base images (docker/standins.sh), and runs the image as a
# user would: the key from -e RECORDHOOK__AUTH__KEYS, data in a named volume,
# --read-only, a published port. Checks, each failing the script with a
# message:
#   - a signed callback (the image's own `recordhook send-test`) gets 200 and
#     reaches the log sink in `podman logs`;
#   - the server runs as uid/gid 65532;
#   - the HEALTHCHECK turns healthy (`podman healthcheck run`);
#   - SIGTERM (`podman stop -t 30`) ends it within the grace, exit code 0;
#   - a restart keeps the spool: the same callback again is a duplicate;
#   - the key from a mounted secret file (auth.key_file) works, and is the
#     only key then;
#   - a bad configuration exits 1 with its message;
# and prints the image's size and how long each phase took.
# It never skips: whatever cannot run (no root, no apt, no podman) fails it,
# under CI=true as anywhere.
#
# Run by .ci/run; locally: `sudo bash docker/container-test.sh` (root, apt,
# and crates.io for the builder's registry). Leaves the image as
# localhost/recordhook:ci and localhost/recordhook:latest (the name
# deploy/compose.yaml gives it); removes its containers and volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
script_name="container-test"
source docker/standins.sh

image=localhost/recordhook:ci
prefix=recordhook-ci
work=$(mktemp -d)
cleanup() {
  local status=$?
  for name in "$prefix" "$prefix-keyfile"; do
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  done
  for name in "$prefix-data" "$prefix-keyfile-data"; do
    podman volume rm -f "$name" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  if [[ $status -ne 0 ]]; then
    echo "$script_name: FAILED (exit $status)" >&2
  fi
}
trap cleanup EXIT

# Fails unless container $1's log has a line holding every further argument.
log_has() {
  local container=$1
  shift
  podman logs "$container" 2>&1 | python3 -c '
import sys
wanted = sys.argv[1:]
sys.exit(0 if any(all(w in line for w in wanted) for line in sys.stdin) else 1)
' "$@"
}

# How many lines of container $1's log hold every further argument.
log_count() {
  local container=$1
  shift
  podman logs "$container" 2>&1 | python3 -c '
import sys
wanted = sys.argv[1:]
print(sum(all(w in line for w in wanted) for line in sys.stdin))
' "$@"
}

# Sends the callback in file $2, signed with key $3, to port $1 with the
# image's own `recordhook send-test`; prints its output, returns its status.
send_callback() {
  local port=$1 file=$2 key=$3
  podman run --rm --no-healthcheck --network host -v "$file:/callback.json:ro" -e RECORDHOOK_SIGN_KEY="$key" \
    "$image" send-test --url "http://127.0.0.1:$port/callback" --file /callback.json 2>&1
}

healthy() {
  podman healthcheck run "$1" >/dev/null 2>&1
}

# Waits for container $1's HEALTHCHECK to pass, and for podman to say so.
# Podman runs healthchecks on a schedule through systemd timers; no systemd
# runs here (podman logs an error saying so at each start and stop, which is
# harmless), so the check is run on demand, as the timer would.
wait_healthy() {
  local container=$1
  eventually 60 healthy "$container" || {
    podman logs "$container" >&2 || true
    fail "$container: the HEALTHCHECK did not pass within 60 s (log above)"
  }
  local status
  status=$(podman inspect --format '{{.State.Health.Status}}' "$container")
  [[ $status == healthy ]] || fail "$container: health status is '$status', not healthy"
}

# Stops container $1 with SIGTERM and a 30 s grace; fails unless it exits 0
# within it (podman would SIGKILL it after the grace: exit 137).
stop_within_grace() {
  local container=$1 started
  started=$(date +%s%3N)
  podman stop -t 30 "$container" >/dev/null || fail "podman stop $container failed"
  local took_ms=$(($(date +%s%3N) - started)) code
  code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
  if [[ $code -ne 0 ]]; then
    podman logs --tail 20 "$container" >&2 || true
    fail "$container: exit code $code after SIGTERM (took ${took_ms} ms; 137 means SIGKILL after the grace)"
  fi
  ((took_ms < 30000)) || fail "$container: SIGTERM took ${took_ms} ms, not within the 30 s grace"
  echo "$script_name: $container stopped on SIGTERM in ${took_ms} ms, exit code 0"
}

phase "podman and its packages"
setup_podman

phase "base image stand-ins"
builder_standin
runtime_standin

phase "podman build (the Dockerfile, unchanged)"
build_image "$image"
podman tag "$image" localhost/recordhook:latest

phase "image size"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "$script_name: image $image: $size bytes ($((size / 1024 / 1024)) MiB)"
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[[ $user == 65532:65532 ]] || fail "the image's user is '$user', not 65532:65532"
healthcheck=$(podman image inspect --format '{{.Config.Healthcheck}}' "$image")
[[ $healthcheck == *healthcheck* ]] || fail "the image has no HEALTHCHECK ($healthcheck): built without --format docker?"

phase "run: key from the environment, named volume, --read-only"
key=$(openssl rand -hex 16)
port=$(free_port)
podman volume rm -f "$prefix-data" >/dev/null 2>&1 || true
podman rm -f -t 0 "$prefix" >/dev/null 2>&1 || true
podman run -d --name "$prefix" --read-only -p "127.0.0.1:$port:8080" \
  -e RECORDHOOK__AUTH__KEYS="$key" -v "$prefix-data:/var/lib/recordhook" "$image" >/dev/null \
  || fail "podman run $image failed"
wait_healthy "$prefix"
echo "$script_name: the HEALTHCHECK passed; podman reports healthy"

pid=$(podman inspect --format '{{.State.Pid}}' "$prefix")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
[[ $uids == "65532 65532 65532 65532" && $gids == "65532 65532 65532 65532" ]] \
  || fail "the server runs as uid ($uids) gid ($gids), not 65532"
echo "$script_name: the server runs as uid 65532, gid 65532"

stream="container-test-$RANDOM$RANDOM"
cat >"$work/callback.json" <<EOF
{"event_type": 100, "appid": 1000000, "app": "push.example.com", "appname": "live",
 "stream_id": "$stream", "channel_id": "$stream", "file_id": "file-$stream",
 "record_file_id": "file-$stream", "file_format": "mp4", "task_id": "",
 "start_time": 1764800000, "end_time": 1764800060, "start_time_usec": 0, "end_time_usec": 0,
 "duration": 60, "file_size": 1048576, "stream_param": "", "media_start_time": 0,
 "record_bps": 0, "callback_ext": "{}",
 "video_url": "https://example.invalid/$stream.mp4"}
EOF
chmod 0644 "$work/callback.json"
answer=$(send_callback "$port" "$work/callback.json" "$key") \
  || fail "the signed callback was not answered 200: $answer"
[[ $answer == *"HTTP 200"* ]] || fail "unexpected answer: $answer"
echo "$script_name: signed callback: $(echo "$answer" | tr '\n' ' ')"
eventually 20 log_has "$prefix" '"message":"record"' "\"stream_id\":\"$stream\"" \
  || fail "the log sink did not log the record of stream $stream"
event_id=$(podman logs "$prefix" 2>&1 | python3 -c '
import json, sys
for line in sys.stdin:
    if "callback accepted" in line and sys.argv[1] in line:
        print(json.loads(line)["event_id"]); break
' "$stream")
[[ -n $event_id ]] || fail "no 'callback accepted' line names the event id"
echo "$script_name: the log sink delivered event $event_id"
wrong=$(send_callback "$port" "$work/callback.json" "not-the-key") \
  && fail "a callback signed with another key was answered 200"
[[ $wrong == *"HTTP 401"* ]] || fail "a wrongly signed callback got: $wrong"
podman exec "$prefix" recordhook dead-letters list >"$work/dead-letters" \
  || fail "recordhook dead-letters list inside the container failed"
[[ ! -s $work/dead-letters ]] || fail "unexpected dead letters: $(cat "$work/dead-letters")"

phase "SIGTERM"
stop_within_grace "$prefix"

phase "restart keeps the spool"
podman start "$prefix" >/dev/null || fail "podman start $prefix failed"
wait_healthy "$prefix"
port=$(podman port "$prefix" 8080/tcp | sed 's/.*://')
answer=$(send_callback "$port" "$work/callback.json" "$key") \
  || fail "the callback sent again was not answered 200: $answer"
eventually 20 log_has "$prefix" '"outcome":"duplicate"' "\"event_id\":\"$event_id\"" \
  || fail "after the restart the same callback was not answered as a duplicate (spool lost?)"
records=$(log_count "$prefix" '"message":"record"' "\"stream_id\":\"$stream\"")
[[ $records -eq 1 ]] || fail "the record was logged $records times, not once"
echo "$script_name: after a restart the same callback is a duplicate, delivered once in all"
stop_within_grace "$prefix"

phase "run: key from a mounted secret file (auth.key_file)"
file_key=$(openssl rand -hex 16)
printf '%s\n' "$file_key" >"$work/keys"
chmod 0644 "$work/keys"
port=$(free_port)
podman volume rm -f "$prefix-keyfile-data" >/dev/null 2>&1 || true
podman run -d --name "$prefix-keyfile" --read-only -p "127.0.0.1:$port:8080" \
  -v "$work/keys:/run/secrets/recordhook_keys:ro" \
  -e RECORDHOOK__AUTH__KEY_FILE=/run/secrets/recordhook_keys \
  -v "$prefix-keyfile-data:/var/lib/recordhook" "$image" >/dev/null \
  || fail "podman run with a key file failed"
wait_healthy "$prefix-keyfile"
answer=$(send_callback "$port" "$work/callback.json" "$file_key") \
  || fail "a callback signed with the file's key was not answered 200: $answer"
eventually 20 log_has "$prefix-keyfile" '"message":"record"' "\"stream_id\":\"$stream\"" \
  || fail "the key-file container's log sink did not log the record"
wrong=$(send_callback "$port" "$work/callback.json" "$key") \
  && fail "with a key file, a callback signed with another key was answered 200"
echo "$script_name: the key from the mounted file is in force (its callback 200, another key 401)"
stop_within_grace "$prefix-keyfile"

phase "bad configuration"
printf '[server]\nlisten = "0.0.0.0:8080"\nlistn = "typo"\n' >"$work/bad.toml"
chmod 0644 "$work/bad.toml"
status=0
output=$(podman run --rm --no-healthcheck --read-only -e RECORDHOOK__AUTH__KEYS="$key" \
  -v "$work/bad.toml:/etc/recordhook/config.toml:ro" "$image" 2>&1) || status=$?
[[ $status -eq 1 ]] || fail "a bad configuration exited $status, not 1: $output"
[[ $output == *listn* ]] || fail "the bad configuration's message does not name the unknown key: $output"
echo "$script_name: unknown key: exit 1: $(echo "$output" | tail -1)"
status=0
output=$(podman run --rm --no-healthcheck --read-only "$image" 2>&1) || status=$?
[[ $status -eq 1 ]] || fail "no callback key: exited $status, not 1: $output"
[[ $output == *key* ]] || fail "no callback key: the message does not say so: $output"
echo "$script_name: no key: exit 1: $(echo "$output" | tail -1)"

phase "done"
echo "$script_name: OK (image $((size / 1024 / 1024)) MiB, $SECONDS s in all)"

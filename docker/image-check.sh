#!/usr/bin/env bash
# Runs the release binary the way the Dockerfile's runtime stage runs it, on a
# machine without a Docker engine: as the image's user, from the image's
# binary and config paths, with the image's data directory as the only place
# it may write, and shows that it serves, answers its HEALTHCHECK and stores a
# signed test callback, then stops cleanly on SIGTERM.
#
# It reads user, paths and port from the Dockerfile itself, so the Dockerfile
# stays the one place they are named. Needs root (to switch user); it installs
# into the real image paths and removes them again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "image-check: needs root to run as the image's user; skipped" >&2
  exit 0
fi

# --- what the runtime stage says -------------------------------------------
eval "$(python3 - <<'PY'
import json, re, shlex
text = open("Dockerfile").read().replace("\\\n", " ")
runtime = text[text.rindex("\nFROM "):]          # the last stage
def one(pattern):
    found = re.findall(pattern, runtime, re.M)
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0].strip()
user = one(r"^USER\s+(\S+)")
entrypoint = json.loads(one(r"^ENTRYPOINT\s+(\[.*\])"))
cmd = json.loads(one(r"^CMD\s+(\[.*\])"))
health = json.loads(one(r"^HEALTHCHECK.*?CMD\s+(\[.*\])"))
config = one(r"^ENV\s+RECORDHOOK_CONFIG=(\S+)")
volume = json.loads(one(r"^VOLUME\s+(\[.*\])"))
workdir = one(r"^WORKDIR\s+(\S+)")
port = one(r"^EXPOSE\s+(\d+)")
copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+(\S+)", runtime, re.M)
binary = entrypoint[0]
assert len(entrypoint) == 1 and binary.startswith("/"), entrypoint
assert health == [binary, "healthcheck"], f"HEALTHCHECK {health} must run {binary} healthcheck"
assert cmd == ["serve"], cmd
sources = {dest: src for src, dest in copies}
assert sources.get(binary, "").endswith("/target/release/recordhook"), f"no COPY of the binary to {binary}"
assert config in sources, f"no COPY to the config path {config}"
assert len(volume) == 1 and volume[0] == workdir, f"VOLUME {volume} / WORKDIR {workdir}"
assert volume[0] in sources, f"the data directory {volume[0]} is not created with its owner"
uid, _, gid = user.partition(":")
for name, value in dict(uid=uid, gid=gid or uid, binary=binary, config=config,
                        config_source=sources[config], data=volume[0], port=port).items():
    print(f"image_{name}={shlex.quote(value)}")
PY
)"
echo "image-check: user ${image_uid}:${image_gid}, binary ${image_binary}, config ${image_config}, data ${image_data}, port ${image_port}"

# --- the binary -------------------------------------------------------------
cargo build --release --locked --quiet
binary=target/release/recordhook
# distroless/cc provides glibc and libgcc_s, nothing else.
unexpected=$(ldd "$binary" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|/lib64/ld-linux)' || true)
if [[ -n $unexpected ]]; then
  echo "image-check: the binary needs libraries distroless/cc lacks: $unexpected" >&2
  exit 1
fi

# --- lay it out as the image does --------------------------------------------
for path in "$image_binary" "$image_config" "$image_data"; do
  if [[ -e $path ]]; then
    echo "image-check: $path already exists on this machine; refusing to overwrite it" >&2
    exit 1
  fi
done
cleanup() {
  [[ -n ${server_pid:-} ]] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$image_binary" "$image_config" "$image_data"
  rmdir "$(dirname "$image_config")" 2>/dev/null || true
}
trap cleanup EXIT
install -D -o root -g root -m 0755 "$binary" "$image_binary"
install -D -o root -g root -m 0644 "$image_config_source" "$image_config"
install -d -o "$image_uid" -g "$image_gid" -m 0755 "$image_data"

as_image_user() {
  (cd "$image_data" && setpriv --reuid="$image_uid" --regid="$image_gid" --clear-groups \
    env -i PATH=/usr/bin:/bin RECORDHOOK_CONFIG="$image_config" "$@")
}

# The only writable place: the image user cannot write beside its config.
if as_image_user touch "$(dirname "$image_config")/probe" 2>/dev/null; then
  echo "image-check: the image user can write $(dirname "$image_config")" >&2
  exit 1
fi

# The configured port, unless something on this machine already holds it.
port=$image_port
if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
fi
key=image-check-key
log=$(mktemp)
# A plain background command (no subshell), so that $! is recordhook itself:
# setpriv and env each exec the next program in the same process.
pushd "$image_data" >/dev/null
setpriv --reuid="$image_uid" --regid="$image_gid" --clear-groups \
  env -i PATH=/usr/bin:/bin RECORDHOOK_CONFIG="$image_config" \
  RECORDHOOK__AUTH__KEYS="$key" RECORDHOOK__SERVER__LISTEN="0.0.0.0:$port" \
  "$image_binary" serve >"$log" 2>&1 &
server_pid=$!
popd >/dev/null

healthy=0
for _ in $(seq 1 100); do
  if as_image_user RECORDHOOK__SERVER__LISTEN="0.0.0.0:$port" "$image_binary" healthcheck >/dev/null 2>&1; then
    healthy=1
    break
  fi
  sleep 0.1
done
if [[ $healthy -ne 1 ]]; then
  echo "image-check: the HEALTHCHECK command never succeeded; server log:" >&2
  cat "$log" >&2
  exit 1
fi
as_image_user "$image_binary" send-test --url "http://127.0.0.1:$port/callback" --key "$key" --stream-id image_check
[[ -f $image_data/spool.db ]] || { echo "image-check: no spool in $image_data" >&2; exit 1; }
owner=$(stat -c %u "$image_data/spool.db")
[[ $owner == "$image_uid" ]] || { echo "image-check: spool owned by $owner, not $image_uid" >&2; exit 1; }

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
if [[ $status -ne 0 ]]; then
  echo "image-check: exit status $status after SIGTERM; server log:" >&2
  cat "$log" >&2
  exit 1
fi
grep -q '"message":"record"' "$log" || { echo "image-check: the log sink logged no record" >&2; exit 1; }
echo "image-check: served as uid $image_uid from $image_binary with $image_config, stored in $image_data, could not write beside its config, exited 0 on SIGTERM"

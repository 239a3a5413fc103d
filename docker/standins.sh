# shellcheck shell=bash
# Sourced by docker/container-test.sh and docker/compose-test.sh: podman set
# up for this kind of machine, and local stand-ins for the base images the
# Dockerfile and deploy/compose.yaml name, assembled from Debian packages,
# because only package registries are reachable where CI runs (no image
# registry). The stand-ins are test scaffolding; what users build against is
# the real images.
#
# Cached under $RECORDHOOK_CI_CACHE (default /var/cache/recordhook-ci) and in
# podman's own image store, both of which persist between runs on one
# machine; an image is rebuilt when it is missing or its inputs changed (each
# has a stamp, a hash of them, in $RECORDHOOK_CI_CACHE/stamps). Needs root and apt.
# The sourcing script sets script_name, which prefixes every message.

ci_cache=${RECORDHOOK_CI_CACHE:-/var/cache/recordhook-ci}
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The names the Dockerfile and compose.yaml use: the stand-ins are imported
# under exactly these, so both files build and run unchanged.
builder_image=rust:1.95-slim-bookworm
runtime_image=gcr.io/distroless/cc-debian12:nonroot
postgres_image=postgres:15
caddy_image=caddy:2

# Under CI=true anything that cannot run fails the script; locally it too
# fails, since there is nothing to skip to.
fail() {
  echo "${script_name:?}: FAIL: $*" >&2
  exit 1
}

phase_started=$SECONDS
# Prints how long the previous phase took, then names the next one.
phase() {
  if [[ -n ${phase_name:-} ]]; then
    echo "$script_name: [timing] $phase_name: $((SECONDS - phase_started)) s"
  fi
  phase_name=$1
  phase_started=$SECONDS
  echo "== $script_name: $phase_name"
}

# Polls "$@" every half second for up to $1 seconds; true once it succeeds.
eventually() {
  local deadline=$1
  shift
  local until=$((SECONDS + deadline))
  while ((SECONDS < until)); do
    "$@" && return 0
    sleep 0.5
  done
  return 1
}

# A TCP port free on loopback now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Installs the Debian packages named that are not installed yet.
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  if ((${#missing[@]})); then
    echo "$script_name: apt-get install ${missing[*]}"
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || fail "apt-get install ${missing[*]} failed"
  fi
}

# Podman as this machine needs it, for every podman call of the scripts
# (and podman-compose's, which calls podman): written to a file named by
# CONTAINERS_CONF, which replaces /etc/containers/containers.conf, so the
# machine's own podman set-up is left alone.
# - runc: crun refuses the hybrid cgroups (v1 with a v2 mount) here;
# - ulimits: podman's default open-files limit (1048576) is above this
#   machine's hard limit, and the runtime then cannot apply it;
# - cgroupfs and a file events log: no systemd runs here.
setup_podman() {
  [[ $(id -u) -eq 0 ]] || fail "needs root (podman's rootful store, apt, debootstrap)"
  apt_install podman runc netavark aardvark-dns iptables debootstrap ca-certificates
  mkdir -p "$ci_cache"
  ci_nofile=$(ulimit -Hn)
  [[ $ci_nofile == unlimited ]] && ci_nofile=1048576
  ci_nproc=$(ulimit -Hu)
  [[ $ci_nproc == unlimited || $ci_nproc -gt 4096 ]] && ci_nproc=4096
  cat >"$ci_cache/containers.conf" <<EOF
# Written by docker/standins.sh; see there.
[containers]
default_ulimits = ["nofile=$ci_nofile:$ci_nofile", "nproc=$ci_nproc:$ci_nproc"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
  export CONTAINERS_CONF=$ci_cache/containers.conf
  podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}' >/dev/null \
    || fail "podman does not work here"
}

# The stamp (a hash of its inputs) image $1 was built from, or nothing when
# it is missing or has changed since: kept beside the cache as "ID stamp".
image_stamp() {
  local file=$ci_cache/stamps/${1//[\/:]/_} id
  id=$(podman image inspect --format '{{.Id}}' "$1" 2>/dev/null) || return 0
  [[ -f $file ]] && awk -v id="$id" '$1 == id {print $2}' "$file"
  return 0
}

# Records that image $1 was built from stamp $2.
save_stamp() {
  mkdir -p "$ci_cache/stamps"
  echo "$(podman image inspect --format '{{.Id}}' "$1") $2" >"$ci_cache/stamps/${1//[\/:]/_}"
}

# A hash of the named files and of the bash functions named after --.
recipe_hash() {
  local files=()
  while [[ $1 != -- ]]; do files+=("$1"); shift; done
  shift
  cat "${files[@]}" <(declare -f "$@") | sha256sum | cut -c1-16
}

# Tars the directory $1 into podman as image $2, built from stamp $3;
# further arguments are --change instructions.
import_tree() {
  local tree=$1 name=$2 stamp=$3
  shift 3
  local changes=()
  for change in "$@"; do changes+=(--change "$change"); done
  tar -C "$tree" --numeric-owner -c . | podman import --quiet "${changes[@]}" - "$name" >/dev/null \
    || fail "podman import $name failed"
  save_stamp "$name" "$stamp"
  echo "$script_name: $name: stand-in built ($stamp)"
}

# True, and says so, when image $1 is cached and was built from stamp $2.
standin_cached() {
  [[ $(image_stamp "$1") == "$2" ]] || return 1
  echo "$script_name: $1: stand-in cached ($2)"
}

# The CA bundle in tree $1, as ca-certificates' postinst would build it
# (the official images ship it).
ca_bundle() {
  mkdir -p "$1/etc/ssl/certs"
  cat "$1"/usr/share/ca-certificates/mozilla/*.crt >"$1/etc/ssl/certs/ca-certificates.crt"
}

# A minbase Debian bookworm tree with the packages named, cached by name.
debian_tree() {
  local name=$1
  shift
  local tree=$ci_cache/$name
  if [[ ! -f $tree/.complete ]]; then
    rm -rf "$tree.tmp"
    local include
    include=$(IFS=,; echo "$*")
    debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$tree.tmp" "$debian_mirror" \
      >"$ci_cache/$name.log" 2>&1 || fail "debootstrap $name failed: see $ci_cache/$name.log"
    rm -rf "$tree.tmp/var/cache/apt/archives/"*.deb "$tree.tmp/var/lib/apt/lists/"*
    touch "$tree.tmp/.complete"
    rm -rf "$tree"
    mv "$tree.tmp" "$tree"
  fi
  echo "$tree"
}

# The builder: rust:1.95-slim-bookworm is Debian bookworm with gcc, libc6-dev
# and a Rust toolchain under /usr/local. This one takes the machine's own
# toolchain (rustup's stable), and a cargo registry filled with what
# Cargo.lock names, with CARGO_NET_OFFLINE=true, so the Dockerfile's
# `cargo build --locked` runs offline. Rebuilt when Cargo.lock, the
# toolchain or this recipe changes.
builder_standin() {
  command -v cargo >/dev/null || fail "no cargo on PATH for the builder stand-in"
  local sysroot stamp
  sysroot=$(rustc --print sysroot) || fail "rustc --print sysroot failed"
  stamp=$(recipe_hash Cargo.lock <(rustc -vV) -- builder_standin debian_tree import_tree)
  standin_cached "$builder_image" "$stamp" && return
  local rootfs stage=$ci_cache/builder-stage
  rootfs=$(debian_tree builder-rootfs gcc libc6-dev ca-certificates)
  # Only the crates Cargo.lock names, in a CARGO_HOME of their own.
  CARGO_HOME=$ci_cache/cargo-home cargo fetch --locked --quiet \
    || fail "cargo fetch --locked (into $ci_cache/cargo-home) failed"
  rm -rf "$stage"
  cp -a "$rootfs" "$stage"
  rm -f "$stage/.complete"
  # The toolchain as the rust image has it, under /usr/local (rustc finds
  # its libraries and sysroot relative to its own path); no documentation.
  cp -a "$sysroot/bin" "$sysroot/lib" "$sysroot/libexec" "$stage/usr/local/"
  mkdir -p "$stage/usr/local/cargo/registry"
  cp -a "$ci_cache/cargo-home/registry/index" "$ci_cache/cargo-home/registry/cache" \
    "$stage/usr/local/cargo/registry/"
  import_tree "$stage" "$builder_image" "$stamp" \
    "ENV CARGO_HOME=/usr/local/cargo" \
    "ENV CARGO_NET_OFFLINE=true" \
    "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  rm -rf "$stage"
}

# Downloads the named packages' .debs (bookworm, as apt here has them) into
# $ci_cache/$1 and unpacks them into $2, which starts empty.
unpack_debs() {
  local debs=$ci_cache/$1 tree=$2
  shift 2
  mkdir -p "$debs"
  (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$@" >/dev/null) || fail "apt-get download $* failed"
  rm -rf "$tree"
  mkdir -p "$tree"
  for package in "$@"; do
    # The newest download of it (apt-get download keeps older versions).
    # shellcheck disable=SC2012
    dpkg-deb -x "$(ls -t "$debs/${package}"_*.deb | head -1)" "$tree" \
      || fail "dpkg-deb -x $package failed"
  done
}

# The runtime: distroless/cc-debian12 is these Debian packages' files, with
# no shell and no package manager, and a `nonroot` user 65532. Rebuilt when
# this recipe changes.
runtime_standin() {
  local stamp
  stamp=$(recipe_hash -- runtime_standin unpack_debs ca_bundle import_tree)
  standin_cached "$runtime_image" "$stamp" && return
  local tree=$ci_cache/runtime-stage
  unpack_debs runtime-debs "$tree" base-files netbase tzdata libc6 libgcc-s1 libssl3 libstdc++6 ca-certificates
  ca_bundle "$tree"
  cat >"$tree/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$tree/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  mkdir -p "$tree/home/nonroot" "$tree/tmp" "$tree/root"
  chown 65532:65532 "$tree/home/nonroot"
  chmod 1777 "$tree/tmp"
  import_tree "$tree" "$runtime_image" "$stamp" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    "USER 65532" \
    "WORKDIR /home/nonroot"
  rm -rf "$tree"
}

# A stand-in rebuilt leaves its former image untagged in podman's store; it
# is not pruned here, because `podman image prune` also drops the untagged
# intermediate images that are podman's build cache (the dependency layer).
#
# Builds the project's Dockerfile, unchanged, as image $1, against the
# stand-ins: never pulls; --format docker keeps the HEALTHCHECK (OCI images
# have none); --isolation chroot because RUN steps need no namespaces of
# their own here. Layers are cached by podman, so an unchanged tree rebuilds
# in seconds.
build_image() {
  local name=$1
  podman build --pull=never --isolation chroot --format docker \
    --ulimit "nofile=$ci_nofile:$ci_nofile" --ulimit "nproc=$ci_nproc:$ci_nproc" \
    -t "$name" . || fail "podman build of the Dockerfile failed"
}

# postgres:15 as deploy/compose.yaml uses it: Debian's postgresql-15 on a
# minbase bookworm tree, and an entrypoint that does what the official
# image's does with POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB on an
# empty data directory (initdb, password authentication from other hosts,
# the database), then runs postgres as the postgres user. SIGINT stops it
# (a fast shutdown), as in the official image.
postgres_standin() {
  local stamp
  stamp=$(recipe_hash -- postgres_standin debian_tree import_tree)
  standin_cached "$postgres_image" "$stamp" && return
  local rootfs stage=$ci_cache/postgres-stage
  rootfs=$(debian_tree postgres-rootfs postgresql-15)
  rm -rf "$stage"
  cp -a "$rootfs" "$stage"
  rm -f "$stage/.complete"
  cat >"$stage/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Stand-in for the official postgres image's entrypoint (docker/standins.sh).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" >/tmp/pwfile
  chown postgres /tmp/pwfile
  as_postgres initdb -D "$PGDATA" --username="$user" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "${POSTGRES_DB:-$user}" != postgres ]; then
    as_postgres postgres --single -D "$PGDATA" -j postgres >/dev/null <<SQL
CREATE DATABASE "${POSTGRES_DB:-$user}" OWNER "$user";
SQL
  fi
  echo "docker-entrypoint.sh: initialised $PGDATA"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
EOF
  chmod 0755 "$stage/usr/local/bin/docker-entrypoint.sh"
  import_tree "$stage" "$postgres_image" "$stamp" \
    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV PGDATA=/var/lib/postgresql/data" \
    "VOLUME /var/lib/postgresql/data" \
    "EXPOSE 5432" \
    "STOPSIGNAL SIGINT" \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    'CMD ["postgres"]'
  rm -rf "$stage"
}

# caddy:2 as deploy/compose.yaml uses it: Debian's caddy package (2.6 in
# bookworm) and what it links, run as the official image runs it, with
# /etc/caddy/Caddyfile and its data under /data.
caddy_standin() {
  local stamp
  stamp=$(recipe_hash -- caddy_standin unpack_debs ca_bundle import_tree)
  standin_cached "$caddy_image" "$stamp" && return
  local tree=$ci_cache/caddy-stage
  unpack_debs caddy-debs "$tree" caddy base-files netbase tzdata libc6 libzstd1 media-types ca-certificates
  ca_bundle "$tree"
  mkdir -p "$tree/data" "$tree/config" "$tree/tmp"
  chmod 1777 "$tree/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n' >"$tree/etc/passwd"
  printf 'root:x:0:\n' >"$tree/etc/group"
  import_tree "$tree" "$caddy_image" "$stamp" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV XDG_CONFIG_HOME=/config" \
    "ENV XDG_DATA_HOME=/data" \
    "VOLUME /data" \
    "VOLUME /config" \
    "EXPOSE 80" \
    "EXPOSE 443" \
    "WORKDIR /srv" \
    'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'
  rm -rf "$tree"
}

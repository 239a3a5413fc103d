# syntax=docker/dockerfile:1
#
# recordhook container image.
#
#   docker build -t recordhook .
#   docker run -p 8080:8080 -e RECORDHOOK__AUTH__KEYS=your-callback-key \
#     -v recordhook-data:/var/lib/recordhook recordhook
#
# Base images: the official Rust image (rust:1.95-slim-bookworm, Docker Hub)
# for the builder and Google's distroless/cc-debian12:nonroot (gcr.io) for the
# runtime; that is what `docker build` pulls, and what users get.
#
# CI reaches no image registry, so docker/container-test.sh builds this file,
# unchanged, with podman against stand-ins imported under these same names and
# assembled from Debian bookworm packages (docker/standins.sh): a debootstrap
# tree with gcc, libc6-dev and the machine's Rust toolchain for the builder,
# and the files of the packages distroless/cc is made of for the runtime. It
# then runs the image: signed callback, user 65532, HEALTHCHECK, key file,
# restart, SIGTERM, a bad configuration.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# The kafka sink's librdkafka is built from source by rdkafka-sys with its
# configure script (which insists on a C++ compiler) and make, against
# OpenSSL's headers (openssl-sys finds them with pkg-config); the binary
# then links libssl3 alone, which distroless/cc has. The slim image has gcc
# but none of these.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, from the manifests alone, so that a change to the
# sources reuses this layer instead of rebuilding every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/recordhook-* \
              target/release/deps/recordhook-* target/release/deps/librecordhook-*

COPY src ./src
RUN cargo build --release --locked \
    && mkdir -p /out/var/lib/recordhook

# Runtime: distroless/cc: glibc, libgcc, libstdc++, OpenSSL and CA
# certificates, no shell, no package manager, non-root by default.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /build/target/release/recordhook /usr/local/bin/recordhook
COPY config/docker.toml /etc/recordhook/config.toml
COPY --from=builder --chown=65532:65532 /out/var/lib/recordhook /var/lib/recordhook

ENV RECORDHOOK_CONFIG=/etc/recordhook/config.toml
USER 65532:65532
WORKDIR /var/lib/recordhook
VOLUME ["/var/lib/recordhook"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/recordhook", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/recordhook"]
CMD ["serve"]

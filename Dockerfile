# syntax=docker/dockerfile:1
#
# recordhook container image.
#
#   docker build -t recordhook .
#   docker run -p 8080:8080 -e RECORDHOOK__AUTH__KEYS=your-callback-key \
#     -v recordhook-data:/var/lib/recordhook recordhook
#
# The runtime stage below is the one place that names the image's user,
# binary, config path and data directory. docker/image-check.sh reads these
# directives from this file and runs the release binary exactly that way,
# since no Docker engine runs where the tests do (CI runs it too).

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

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

# Runtime: distroless with glibc and libgcc (what the binary links, checked by
# docker/image-check.sh), no shell, no package manager, non-root by default.
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

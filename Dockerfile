# syntax=docker/dockerfile:1

# The `leasehold` image: the host binary on a distroless base, as non-root.
# Build from the repository root:
#
#   docker build -t leasehold .
#
# Optional, off by default: bake the example plugins into /plugins. Build
# them for wasm32-wasip2 first, in the workspace's `plugin` profile (they
# land in target/wasm32-wasip2/plugin/), then pass PLUGINS=baked:
#
#   cargo build --profile plugin --locked --target wasm32-wasip2 -p <example> ...
#   docker build --build-arg PLUGINS=baked -t leasehold .

# `none` (an empty /plugins) or `baked` (the prebuilt example plugins).
ARG PLUGINS=none

# === build ===
# The tag pins the toolchain (rust-toolchain.toml is left out of the build
# context: it would make rustup fetch clippy, rustfmt and the wasm target).
FROM rust:1.97-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out because the cached target/ is not part of
# the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p leasehold \
    && install -D -m 0755 target/release/leasehold /out/leasehold \
    && mkdir -p /out/plugins

# === plugins baked into the image (PLUGINS=none|baked) ===
FROM scratch AS plugins-none
COPY --from=builder /out/plugins /plugins

FROM plugins-none AS plugins-baked
# Only these files of target/ are in the build context (.dockerignore).
COPY target/wasm32-wasip2/plugin/*.wasm /plugins/

# A stage chosen by the build arg, not an image to tag (hadolint cannot tell).
# hadolint ignore=DL3006
FROM plugins-${PLUGINS} AS plugins

# === runtime ===
# glibc and libgcc for the Rust binary, CA certificates, no shell; the
# `nonroot` user is 65532, as the Helm chart's securityContext expects.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="leasehold" \
      org.opencontainers.image.description="A highly available Kubernetes control plane whose controllers are WebAssembly components" \
      org.opencontainers.image.source="https://github.com/leasehold-dev/leasehold" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/leasehold /leasehold
COPY --from=plugins /plugins /plugins
USER 65532:65532
# API, probes and metrics (`leasehold run --listen`).
EXPOSE 8080
ENTRYPOINT ["/leasehold"]
CMD ["run"]

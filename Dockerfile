# The cns agent image: cargo xtask kind load (or docker build -t cns-agent:dev .)
#
# Build stage: the project's own toolchain recipe (scripts/setup.sh: nightly rust-src and
# bpf-linker for the eBPF programs; its last step, mounting bpffs, cannot work in a build
# container and is ignored: a missing toolchain fails the cargo build), then the agent.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh || true \
 && cargo build --release -p cns-agent \
 && cp target/release/cns-agent /cns-agent

# Run stage: a slim base with sh/mount/mountpoint for the bpffs init container.
FROM debian:bookworm-slim
COPY --from=build /cns-agent /usr/local/bin/cns-agent
ENTRYPOINT []
CMD ["cns-agent", "--help"]

#!/usr/bin/env bash
# Installs everything the build and the tests need, idempotently (see ../shared/TOOLCHAIN.md).
# Called by `cargo xtask setup` and by `.ci/run`; safe to run again.
set -euo pipefail

log() { echo "[setup] $*"; }

# System packages: iproute2 for the virtual node, iputils-ping for the demo, iptables and
# ipset for the benchmarks' kube-router-style baseline (cargo xtask bench).
need_pkgs=()
for p in iproute2 iputils-ping iptables ipset; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# setpriv (util-linux; its own package on some newer releases) runs the agent with only the
# DaemonSet's capabilities in tests/tests/capabilities.rs.
if ! command -v setpriv >/dev/null 2>&1; then
  log "installing setpriv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq util-linux >/dev/null
  command -v setpriv >/dev/null 2>&1 || apt-get install -y -qq setpriv >/dev/null
fi

# Nightly with rust-src for the eBPF crate.
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi

# bpf-linker built against the nightly's own LLVM (no prebuilt is reachable, no system LLVM 22).
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q '0.13.0'; then
  log "building bpf-linker 0.13.0 against the nightly's LLVM (about a minute)"
  SYSROOT=$(rustc +nightly --print sysroot)
  LLVM_SO=$(basename "$(ls "$SYSROOT"/lib/libLLVM-*-rust-*.so | head -1)" .so)
  RUSTFLAGS="-L $SYSROOT/lib -l dylib=${LLVM_SO#lib} -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
    cargo +nightly install bpf-linker --version 0.13.0 --locked \
      --no-default-features --features llvm-22,no-llvm-linking
fi
log "bpf-linker: $(bpf-linker --version)"

# bpffs, as the agent would mount it itself.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "done"

#!/usr/bin/env bash
# Runs every test minietcd has, for every crate of the workspace. Installs what the tests need
# when it is missing:
#   etcd-server, etcd-client  real etcd 3.4 and etcdctl (differential and client tests)
#   protobuf-compiler         protoc, needed by the etcd-client crate's build (not by ours)
#   curl                      /health over TLS with client certificates (tests/it/tls.rs)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# cargo-nextest gives every test its own process and a time limit (.config/nextest.toml).
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing: cargo-nextest"
  cargo install --locked cargo-nextest
fi

export RUST_BACKTRACE=1
# Every binary of the workspace: the integration tests run minietcdctl and minietcd-bench
# from the target directory (cargo builds only the server's own binary for its tests).
cargo build --workspace --bins
# Integration tests start real processes; a few at a time keeps a 2-core machine responsive.
cargo nextest run --workspace --all-targets --test-threads="${TEST_THREADS:-4}" "$@"
# Doc tests (the client README's examples among them); `--all-targets` does not run them.
cargo test --workspace --doc

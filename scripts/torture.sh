#!/usr/bin/env bash
# Long fault soak: the fault harness of tests/it/robust/ (three members behind peer proxies,
# concurrent recorded clients, watches on every member) with a random sequence of faults for
# the given duration, then every checker on the whole history.
#
# Usage: scripts/torture.sh [--duration 10m] [--seed N] [--faults partition,pause,kill,membership]
#                           [--against etcd]
#   --duration  seconds, or with an s/m/h suffix (default 60s)
#   --seed      workload and fault choice (default 1); a violation names it
#   --faults    kinds to draw from (default all four)
#   --against   etcd: run against real etcd 3.4 instead of minietcd
# Prints the operations, faults injected and every violation; exits non-zero on a violation.
# A failing run keeps the members' logs and the history (history.txt) in a temp dir it names.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION=60s
SEED=1
FAULTS=partition,pause,kill,membership
AGAINST=minietcd
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION="${2:?}"; shift ;;
    --seed) SEED="${2:?}"; shift ;;
    --faults) FAULTS="${2:?}"; shift ;;
    --against) AGAINST="${2:?}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "torture: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
case "$DURATION" in
  *h) SECS=$(( ${DURATION%h} * 3600 )) ;;
  *m) SECS=$(( ${DURATION%m} * 60 )) ;;
  *s) SECS=${DURATION%s} ;;
  *) SECS=$DURATION ;;
esac
case "$AGAINST" in
  minietcd|etcd) ;;
  *) echo "torture: --against minietcd|etcd" >&2; exit 1 ;;
esac
if [[ "$AGAINST" == etcd ]] && ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
cd "$REPO"
export ROBUST_TORTURE_SECS="$SECS" ROBUST_SEED="$SEED" ROBUST_FAULTS="$FAULTS"
# The members inherit RUST_LOG: their own info lines go to the kept logs of a failed run.
export RUST_LOG="${RUST_LOG:-it::robust=info,minietcd=info}"
echo "torture: $AGAINST for ${SECS}s, seed $SEED, faults $FAULTS"
cargo test --test it "robust::scenarios::torture_$AGAINST" -- --exact --nocapture 2>&1 |
  grep -E -A1 "injecting|scenario done|torture run done|violations|^not |^watch|^read|^ack|^event|^sessions|^revision|^two |^txn|^lease|^no watch|history written|logs kept|test result|panicked" |
  sed 's/\x1b\[[0-9;]*m//g'
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# Failover time of minietcd and etcd 3.4 side by side: a three-member cluster of each (same
# flags, etcd's defaults: heartbeat 100 ms, election 1000 ms), SIGKILL the leader, and time
# until etcdctl (all three endpoints, 300 ms per attempt) gets its first put acknowledged.
#
# Usage: scripts/failover-vs-etcd.sh [--rounds N] [--port-base P]   (defaults 3, 13000)
# Needs etcd, etcdctl (apt-get install -y etcd-server etcd-client) and a release build of
# minietcd (built here when missing).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=3
PORT_BASE=13000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="${2:?}"; shift ;;
    --port-base) PORT_BASE="${2:?}"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "failover-vs-etcd: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
}
MINIETCD="${CARGO_TARGET_DIR:-$REPO/target}/release/minietcd"
[[ -x "$MINIETCD" ]] || (cd "$REPO" && cargo build --release --bin minietcd)
export ETCDCTL_API=3

PIDS=()
DIRS=()
cleanup() {
  local p d
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && wait "$p" 2>/dev/null || true; done
  for d in "${DIRS[@]:-}"; do [[ -n "$d" ]] && rm -rf "$d"; done
  PIDS=()
}
trap cleanup EXIT

# one_run BIN BASE: prints the seconds from the leader's SIGKILL to the first acknowledged put.
one_run() {
  local bin=$1 base=$2 dir i cp pp eps leader li t0 t1
  dir=$(mktemp -d /tmp/failover.XXXXXX); DIRS+=("$dir")
  local ic="m1=http://127.0.0.1:$((base+1)),m2=http://127.0.0.1:$((base+11)),m3=http://127.0.0.1:$((base+21))"
  for i in 1 2 3; do
    cp=$((base + (i-1)*10)); pp=$((cp+1))
    "$bin" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$ic" --initial-cluster-token failover --initial-cluster-state new \
      >"$dir/m$i.log" 2>&1 &
    PIDS+=($!)
  done
  eps="127.0.0.1:$base,127.0.0.1:$((base+10)),127.0.0.1:$((base+20))"
  for _ in $(seq 100); do etcdctl --endpoints="$eps" put warm up >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  leader=$(etcdctl --endpoints="$eps" endpoint status 2>/dev/null | awk -F', ' '$5 == "true" {print $1}')
  li=""
  for i in 1 2 3; do [[ "$leader" == "127.0.0.1:$((base + (i-1)*10))" ]] && li=$i; done
  [[ -n "$li" ]] || { echo "no leader found (logs in $dir)" >&2; return 1; }
  t0=$(date +%s.%N)
  kill -9 "${PIDS[$((${#PIDS[@]} - 4 + li))]}"
  until etcdctl --endpoints="$eps" --command-timeout=300ms put k v >/dev/null 2>&1; do :; done
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
  cleanup
}

for r in $(seq "$ROUNDS"); do
  e=$(one_run etcd "$PORT_BASE")
  m=$(one_run "$MINIETCD" "$((PORT_BASE + 100))")
  echo "round $r: first put after the leader's SIGKILL: etcd ${e} s, minietcd ${m} s"
done

#!/usr/bin/env bash
# The three-node local cluster of cluster/Procfile.
#
#   scripts/cluster.sh up            build (release) and start every member
#   scripts/cluster.sh down          stop every member this script started
#   scripts/cluster.sh status        members, leader, each member's revision and raft index
#   scripts/cluster.sh kill N        SIGKILL member N (1..3)
#   scripts/cluster.sh stop N        SIGTERM member N
#   scripts/cluster.sh restart N     stop member N and start it again from its data dir
#   scripts/cluster.sh logs N        follow member N's log
#
# Data, logs and pid files live in one folder: $MINIETCD_CLUSTER_DIR or --dir DIR
# (default: ./cluster-data). Only processes whose pid files this script wrote are signalled,
# and only while that pid still runs the minietcd binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${MINIETCD_CLUSTER_DIR:-$root/cluster-data}"
procfile="$root/cluster/Procfile"
bin="${MINIETCD_BIN:-$root/target/release/minietcd}"

if [ "${1:-}" = "--dir" ]; then dir="$2"; shift 2; fi
cmd="${1:-}"
shift || true

die() { echo "cluster.sh: $*" >&2; exit 1; }

members() { grep -E '^[a-z0-9]+:' "$procfile" | cut -d: -f1; }
flags_of() { grep -E "^$1:" "$procfile" | cut -d: -f2-; }
name_of() {
  local n="$1"
  [[ "$n" =~ ^[1-9]$ ]] || die "member number must be 1..3, got '$n'"
  members | sed -n "${n}p" | grep . || die "no member $n in $procfile"
}
pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }
running() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && [ -e "/proc/$pid" ] && grep -q minietcd "/proc/$pid/cmdline" 2>/dev/null
}
client_url() { flags_of "$1" | sed -E 's/.*--advertise-client-urls ([^ ]+).*/\1/'; }
endpoints() {
  local out=()
  # Without the scheme: etcdctl 3.4 puts a scheme-qualified endpoint into :authority for
  # endpoint status/health, which HTTP/2 servers other than Go's reject.
  for m in $(members); do out+=("$(client_url "$m" | sed "s|^http://||")"); done
  (IFS=,; echo "${out[*]}")
}

start_member() {
  local m="$1"
  running "$m" && { echo "$m already running (pid $(pid_of "$m"))"; return; }
  mkdir -p "$dir"
  # shellcheck disable=SC2046
  nohup "$bin" $(flags_of "$m") --data-dir "$dir/$m.minietcd" >>"$dir/$m.log" 2>&1 &
  echo $! >"$dir/$m.pid"
  echo "$m started (pid $!), log $dir/$m.log"
}

signal_member() {
  local m="$1" sig="$2"
  if running "$m"; then
    kill "-$sig" "$(pid_of "$m")"
    if [ "$sig" = TERM ]; then
      for _ in $(seq 1 100); do running "$m" || break; sleep 0.1; done
    fi
    echo "$m: sent SIG$sig"
  else
    echo "$m is not running"
  fi
  [ "$sig" = KILL ] || rm -f "$dir/$m.pid"
}

case "$cmd" in
  up)
    if [ ! -x "$bin" ]; then (cd "$root" && cargo build --release --bin minietcd); fi
    for m in $(members); do start_member "$m"; done
    ;;
  down)
    for m in $(members); do signal_member "$m" TERM; done
    ;;
  kill) signal_member "$(name_of "${1:-}")" KILL ;;
  stop) signal_member "$(name_of "${1:-}")" TERM ;;
  restart)
    m="$(name_of "${1:-}")"
    signal_member "$m" TERM
    start_member "$m"
    ;;
  logs)
    m="$(name_of "${1:-}")"
    exec tail -n 50 -F "$dir/$m.log"
    ;;
  status)
    command -v etcdctl >/dev/null || die "etcdctl not found (apt-get install -y etcd-client)"
    for m in $(members); do
      if running "$m"; then echo "$m: running (pid $(pid_of "$m"))"; else echo "$m: down"; fi
    done
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" --dial-timeout=1s --command-timeout=2s \
      member list -w table 2>/dev/null || echo "member list: no member answered"
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" --dial-timeout=1s --command-timeout=2s \
      endpoint status -w table 2>/dev/null || echo "endpoint status: some members did not answer"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || exit 2
    ;;
esac

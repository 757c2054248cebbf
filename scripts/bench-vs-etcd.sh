#!/usr/bin/env bash
# Side-by-side benchmark of minietcd and etcd 3.4 on this machine.
#
# Starts a fresh cluster of each (three members, or one with --single) on loopback with the same
# flags, runs the same minietcd-bench suite against each, alternating which goes first over
# --rounds rounds so that drift (page cache, thermal, other load) hits both alike, and prints
# one table: workload, etcd, minietcd, ratio. Only one cluster runs at a time. Everything it
# starts is killed on exit, whatever the exit.
#
# Usage: scripts/bench-vs-etcd.sh [--single] [--quick] [--rounds N] [--port-base P]
#                                 [--out DIR] [--no-build] [--keep] [--only LIST]
#   --single      one-member clusters instead of three
#   --quick       small totals, one round (well under 2 minutes once built)
#   --rounds N    rounds of A/B (default 3; 1 with --quick)
#   --port-base P first port used (default 11000); clusters use P..P+99. Pick another base if a
#                 cluster of yours already listens there.
#   --out DIR     where JSON reports, logs and the table go (default: a new temp dir)
#   --no-build    use the release binaries already built
#   --keep        keep data dirs and logs of the members
#   --only LIST   run only these workloads, a comma-separated list of put, range, txn, lease,
#                 watch (default: all); for quick A/B runs of one path, the full table needs all
#   --report DIR  print the table of an earlier run's --out DIR again, and run nothing
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MEMBERS=3
QUICK=0
ROUNDS=""
PORT_BASE=11000
OUT=""
BUILD=1
KEEP=0
REPORT=""
ONLY="put,range,txn,lease,watch"

die() { echo "bench-vs-etcd: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --single) MEMBERS=1 ;;
    --quick) QUICK=1 ;;
    --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    --port-base) PORT_BASE="${2:?--port-base needs a port}"; shift ;;
    --port-base=*) PORT_BASE="${1#*=}" ;;
    --out) OUT="${2:?--out needs a directory}"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    --only=*) ONLY="${1#*=}" ;;
    --report) REPORT="${2:?--report needs a directory}"; shift ;;
    --report=*) REPORT="${1#*=}" ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ -z "$ROUNDS" ]] && { [[ $QUICK == 1 ]] && ROUNDS=1 || ROUNDS=3; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
for w in ${ONLY//,/ }; do
  [[ " put range txn lease watch " == *" $w "* ]] || die "--only: unknown workload $w (put, range, txn, lease, watch)"
done
# wants WORKLOAD: whether --only selected it.
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
if ! [[ "$PORT_BASE" =~ ^[0-9]+$ ]] || (( PORT_BASE < 1024 || PORT_BASE > 65400 )); then
  die "--port-base must be in 1024..65400"
fi
if [[ -z "$REPORT" ]]; then
  [[ -z "$OUT" ]] && OUT="$(mktemp -d /tmp/bench-vs-etcd.XXXXXX)"
  mkdir -p "$OUT"
  OUT="$(cd "$OUT" && pwd)"
fi

# ---------------------------------------------------------------------------------------------
# Everything started is recorded here and killed by pid on exit.
PIDS=()
DATA_DIRS=()
cleanup() {
  local pid
  # TERM first so that `timeout` wrappers pass it on to the benchmark they run, then KILL.
  for pid in "${PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  sleep 0.3
  for pid in "${PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  for pid in "${PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  if [[ $KEEP == 0 ]]; then
    local d
    for d in "${DATA_DIRS[@]:-}"; do [[ -n "$d" ]] && rm -rf "$d"; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The table: medians over rounds, from DIR/results.tsv, DIR/meta and DIR/notes.txt.
print_table() {
  local dir=$1 members rounds
  read -r members rounds <"$dir/meta"
  python3 - "$dir/results.tsv" "$members" "$rounds" "$dir/notes.txt" <<'PY' | tee "$dir/table.txt"
import statistics, sys
from collections import OrderedDict
path, members, rounds, notes_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = OrderedDict()
for line in open(path):
    rnd, kind, workload, metric, value, direction = line.rstrip("\n").split("\t")
    try:
        v = float(value)
    except ValueError:
        continue
    if v != v:  # nan
        continue
    rows.setdefault((workload, metric, direction), {}).setdefault(kind, []).append(v)

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

def cell(vs):
    """Median over rounds, with the spread (max - min, relative to the median) when >1 round."""
    if not vs:
        return None, "-"
    m = statistics.median(vs)
    if len(vs) > 1 and m:
        return m, f"{fmt(m)} ±{50 * (max(vs) - min(vs)) / abs(m):.0f}%"
    return m, fmt(m)

print(f"\n{members}-member clusters, median of {rounds} round(s) (± half the spread between rounds); "
      "ratio = minietcd / etcd\n")
head = ("workload", "metric", "etcd", "minietcd", "ratio", "better", "minietcd vs etcd")
table = [head]
for (workload, metric, direction), by_kind in rows.items():
    if direction not in ("higher", "lower"):
        continue
    e, e_text = cell(by_kind.get("etcd", []))
    m, m_text = cell(by_kind.get("minietcd", []))
    ratio = m / e if (e and m is not None) else None
    verdict = "-"
    if ratio is not None and ratio > 0:
        good = ratio if direction == "higher" else 1 / ratio
        verdict = f"{good:.2f}x " + ("better" if good >= 1 else "worse")
    table.append((workload, metric, e_text, m_text, "-" if ratio is None else f"{ratio:.2f}",
                  f"{direction} is better", verdict))
cpu = {}
for (workload, metric, direction), by_kind in rows.items():
    if direction == "info":
        for kind, vs in by_kind.items():
            cpu[kind] = max(cpu.get(kind, 0.0), max(vs))
table.append(("bench client (max over runs)", "CPU % of one core", fmt(cpu.get("etcd")), fmt(cpu.get("minietcd")), "-", "info", "-"))
widths = [max(len(r[i]) for r in table) for i in range(len(head))]
for i, r in enumerate(table):
    print("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
spent = {}
for (workload, metric, direction), by_kind in rows.items():
    if direction in ("clientcpu", "servercpu"):
        for kind, vs in by_kind.items():
            spent.setdefault(kind, {}).setdefault(direction, 0.0)
            spent[kind][direction] += sum(vs)
for kind, s in spent.items():
    c, srv = s.get("clientcpu", 0.0), s.get("servercpu", 0.0)
    share = f"{100 * c / srv:.0f}%" if srv else "-"
    print(f"\nCPU over all {kind} runs: servers {srv:.1f} s, bench client {c:.1f} s ({share} of the servers')")
for note in open(notes_path).read().splitlines():
    if note.strip():
        print(f"\nNote: {note}")
PY
}

if [[ -n "$REPORT" ]]; then
  [[ -f "$REPORT/results.tsv" && -f "$REPORT/meta" ]] || die "$REPORT holds no results of this script"
  print_table "$REPORT"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Tools.
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  log "etcd not found: installing etcd-server and etcd-client (Debian packages, etcd 3.4)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if ! command -v python3 >/dev/null; then
  log "python3 not found (used to read the JSON reports): installing it"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
ETCD_VERSION="$(etcd --version | awk '/etcd Version/ {print $3}')"
[[ "$ETCD_VERSION" == 3.4.* ]] || log "warning: etcd $ETCD_VERSION is not 3.4.x; the comparison is meant against 3.4.23"
export ETCDCTL_API=3

TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
if [[ $BUILD == 1 ]]; then
  log "building release binaries"
  (cd "$REPO" && cargo build --release --bin minietcd --bin minietcd-bench) >&2
fi
# Private copies: a concurrent build into the same target dir must not swap them mid-run.
BIN="$OUT/bin"
mkdir -p "$BIN"
[[ -x "$TARGET/release/minietcd-bench" ]] || die "$TARGET/release/minietcd-bench is missing (run without --no-build)"
cp "$TARGET/release/minietcd-bench" "$BIN/"
BENCH="$BIN/minietcd-bench"
MINIETCD=""
if [[ -x "$TARGET/release/minietcd" ]]; then
  cp "$TARGET/release/minietcd" "$BIN/"
  MINIETCD="$BIN/minietcd"
fi

# ---------------------------------------------------------------------------------------------
# Clusters. Ports: etcd uses base+0.., minietcd base+50..; clients at +0..+2, peers at +10..+12.
port_offset() { [[ "$1" == etcd ]] && echo 0 || echo 50; }
client_port() { echo $(( PORT_BASE + $(port_offset "$1") + $2 )); }
peer_port() { echo $(( PORT_BASE + $(port_offset "$1") + 10 + $2 )); }
endpoints() {
  local kind=$1 i eps=()
  for (( i = 0; i < MEMBERS; i++ )); do eps+=("127.0.0.1:$(client_port "$kind" "$i")"); done
  local IFS=,; echo "${eps[*]}"
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

CLUSTER_PIDS=()
# start_cluster KIND ROUND: starts the members with identical flags; 0 when all are healthy.
start_cluster() {
  local kind=$1 round=$2 i initial="" bin
  CLUSTER_PIDS=()
  [[ "$kind" == etcd ]] && bin="$(command -v etcd)" || bin="$MINIETCD"
  for (( i = 0; i < MEMBERS; i++ )); do
    initial+="${initial:+,}$kind$i=http://127.0.0.1:$(peer_port "$kind" "$i")"
    for p in "$(client_port "$kind" "$i")" "$(peer_port "$kind" "$i")"; do
      port_busy "$p" && die "port $p is in use: pick another --port-base"
    done
  done
  for (( i = 0; i < MEMBERS; i++ )); do
    local dir="$OUT/data/$kind-r$round-m$i"
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
    DATA_DIRS+=("$dir")
    local cu pu
    cu="http://127.0.0.1:$(client_port "$kind" "$i")"
    pu="http://127.0.0.1:$(peer_port "$kind" "$i")"
    # etcd 3.4 warns at start-up unless it is told to use its structured logger.
    local extra=()
    [[ "$kind" == etcd ]] && extra=(--logger=zap)
    "$bin" --name "$kind$i" --data-dir "$dir" \
      --listen-client-urls "$cu" --advertise-client-urls "$cu" \
      --listen-peer-urls "$pu" --initial-advertise-peer-urls "$pu" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "bench-$kind-r$round" --log-level=warn "${extra[@]}" \
      >"$OUT/logs/$kind-r$round-m$i.log" 2>&1 &
    PIDS+=($!)
    CLUSTER_PIDS+=($!)
  done
  local deadline=$(( SECONDS + 30 ))
  while (( SECONDS < deadline )); do
    for pid in "${CLUSTER_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { log "$kind member $pid exited during start-up (log: $OUT/logs/)"; return 1; }
    done
    if etcdctl --endpoints "$(endpoints "$kind")" --command-timeout=1s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "$kind did not become healthy within 30 s (log: $OUT/logs/)"
  return 1
}

stop_cluster() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=()
}

# proc_kb PID FIELD: a VmHWM/VmRSS figure of a process in kB (0 when gone).
proc_kb() {
  local v
  v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true)
  echo "${v:-0}"
}
# CPU ticks the members have used so far: "user system".
CLK_TCK=$(getconf CLK_TCK)
cluster_cpu_ticks() {
  local user=0 sys=0 pid u s
  for pid in "${CLUSTER_PIDS[@]}"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
    user=$(( user + ${u:-0} ))
    sys=$(( sys + ${s:-0} ))
  done
  echo "$user $sys"
}
cluster_rss_kb() {
  local total=0 pid
  for pid in "${CLUSTER_PIDS[@]}"; do total=$(( total + $(proc_kb "$pid" VmRSS) )); done
  echo "$total"
}

# ---------------------------------------------------------------------------------------------
# The suite. Each row of $RESULTS: round kind workload metric value direction.
RESULTS="$OUT/results.tsv"
: >"$RESULTS"
echo "$MEMBERS $ROUNDS" >"$OUT/meta"
: >"$OUT/notes.txt"
mkdir -p "$OUT/logs" "$OUT/json"
# record_cpu ROUND KIND NAME FILE TICKS_BEFORE: the client's CPU (from its report) beside the
# servers' (from /proc) over one run, to show the client is not what limits the figures.
# run_failed KIND ROUND NAME: a run that did not complete leaves its rows empty; say why below.
run_failed() {
  log "  $3 failed on $1 (see $OUT/logs/bench-r$2-$1-$3.err)"
  echo "$1 round $2 $3: the run failed, its rows are missing (see $OUT/logs/bench-r$2-$1-$3.err)" >>"$OUT/notes.txt"
}
# note_errors KIND ROUND NAME FILE: a run that completed with failed requests gets a note under
# the table, since its rates count successes only.
note_errors() {
  local n
  n=$(python3 -c "import json,sys; print(sum(p['errors'] for p in json.load(open(sys.argv[1]))['phases']))" "$4" 2>/dev/null || echo "?")
  if [[ "$n" != 0 ]]; then
    echo "$1 round $2 $3: $n failed requests/events (by kind in $4)" >>"$OUT/notes.txt"
  fi
}
record_cpu() {
  local before_user before_sys now_user now_sys user sys ticks
  read -r before_user before_sys <<<"$5"
  read -r now_user now_sys <<<"$(cluster_cpu_ticks)"
  user=$(( now_user - before_user ))
  sys=$(( now_sys - before_sys ))
  ticks=$(( user + sys ))
  record "$1" "$2" "$3" "client CPU % of one core" "$(jget "$4" client_cpu percent_of_one_core)" info
  record "$1" "$2" "$3" "client CPU s" "$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['client_cpu']; print(c['user_secs']+c['system_secs'])" "$4")" clientcpu
  record "$1" "$2" "$3" "server CPU s" "$(python3 -c "import sys; print(int(sys.argv[1]) / int(sys.argv[2]))" "$ticks" "$CLK_TCK")" servercpu
  # Server CPU per request of the run's first phase, all members together (µs, lower is better).
  local per
  per=$(python3 - "$4" "$user" "$sys" "$CLK_TCK" <<'PY'
import json, sys
path, user, sys_t, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = json.load(open(path))["phases"][0]["ok"]
if ok:
    print(f"{user / tck * 1e6 / ok:.1f} {sys_t / tck * 1e6 / ok:.1f}")
else:
    print("nan nan")
PY
)
  record "$1" "$2" "$3" "server CPU µs/request, user" "${per% *}" lower
  record "$1" "$2" "$3" "server CPU µs/request, system" "${per#* }" lower
}
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# jget FILE PHASE_PREFIX FIELD: a number from a JSON report (FIELD may be latency_ms.p99).
jget() {
  python3 - "$@" <<'PY'
import json, sys
path, prefix, field = sys.argv[1:4]
report = json.load(open(path))
if prefix == "client_cpu":
    print(report["client_cpu"][field]); sys.exit()
for p in report["phases"]:
    if p["name"].startswith(prefix):
        v = p
        for part in field.split("."):
            v = v[part] if v is not None else None
        print("nan" if v is None else v); sys.exit()
print("nan")
PY
}

if [[ $QUICK == 1 ]]; then
  PUT_TOTAL=4000; PUT1_TOTAL=300; RANGE_TOTAL=4000; LEASE_TOTAL=0; TXN_TOTAL=0
  WL_STREAMS=10; WL_PER_STREAM=100; WL_PUTS=50; WL_RATE=50
  WM_STREAMS=10; WM_PER_STREAM=1000
else
  PUT_TOTAL=30000; PUT1_TOTAL=2000; RANGE_TOTAL=30000; LEASE_TOTAL=20000; TXN_TOTAL=10000
  WL_STREAMS=100; WL_PER_STREAM=100; WL_PUTS=30; WL_RATE=5
  WM_STREAMS=100; WM_PER_STREAM=1000
fi
# watch-latency keeps events/s (put rate x watchers) at 50,000, well below what either server
# delivers on two cores, so the figure is a latency and not a queue length.
WL_WATCHERS=$(( WL_STREAMS * WL_PER_STREAM ))
# A run that takes longer than this is stopped: a server that stops answering must not hang
# the whole comparison. Its phase is then missing from the table and the log says why.
RUN_TIMEOUT_S=$([[ $QUICK == 1 ]] && echo 60 || echo 300)
WM_WATCHERS=$(( WM_STREAMS * WM_PER_STREAM ))

# bench KIND ROUND NAME ARGS...: one run; the JSON report lands in $OUT/json. Writes fall back
# from --target-leader to all endpoints when the server cannot name its leader.
bench() {
  local kind=$1 round=$2 name=$3; shift 3
  local file="$OUT/json/r$round-$kind-$name.json" cpu_before
  cpu_before=$(cluster_cpu_ticks)
  if ! timeout "$RUN_TIMEOUT_S" "$BENCH" --endpoints "$(endpoints "$kind")" --json "$@" >"$file" 2>"$OUT/logs/bench-r$round-$kind-$name.err"; then
    if [[ " $* " == *" --target-leader "* ]]; then
      local args=() a
      for a in "$@"; do [[ "$a" != --target-leader ]] && args+=("$a"); done
      log "  $name: --target-leader failed on $kind, retrying on all endpoints"
      timeout "$RUN_TIMEOUT_S" "$BENCH" --endpoints "$(endpoints "$kind")" --json "${args[@]}" >"$file" 2>>"$OUT/logs/bench-r$round-$kind-$name.err" || { run_failed "$kind" "$round" "$name"; return 1; }
    else
      run_failed "$kind" "$round" "$name"; return 1
    fi
  fi
  record_cpu "$round" "$kind" "$name" "$file" "$cpu_before"
  note_errors "$kind" "$round" "$name" "$file"
  echo "$file"
}

run_suite() {
  local kind=$1 r=$2 f
  etcdctl --endpoints "$(endpoints "$kind")" put bench-range-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null ||
    log "  could not write the key the range workloads read on $kind"

  if wants put; then
    log "  put: 100 clients, 10 conns, 256-byte values"
    if f=$(bench "$kind" "$r" put-100c --target-leader --conns 10 --clients 100 put --key-size 8 --val-size 256 \
        --total "$PUT_TOTAL" --key-space-size 100000); then
      record "$r" "$kind" "put, 100 clients" "requests/s" "$(jget "$f" put per_sec)" higher
      record "$r" "$kind" "put, 100 clients" "p99 ms" "$(jget "$f" put latency_ms.p99)" lower
    fi
    log "  put: 1 client"
    if f=$(bench "$kind" "$r" put-1c --target-leader --conns 1 --clients 1 put --key-size 8 --val-size 256 \
        --total "$PUT1_TOTAL" --key-space-size 100000); then
      record "$r" "$kind" "put, 1 client" "p50 ms" "$(jget "$f" put latency_ms.p50)" lower
      record "$r" "$kind" "put, 1 client" "p99 ms" "$(jget "$f" put latency_ms.p99)" lower
    fi
  fi
  if wants range; then
    local c
    for c in l s; do
      local label; [[ $c == l ]] && label=linearizable || label=serializable
      log "  range: $label, 100 clients"
      if f=$(bench "$kind" "$r" "range-$c" --conns 10 --clients 100 --consistency "$c" range bench-range-key --total "$RANGE_TOTAL"); then
        record "$r" "$kind" "range $label, 100 clients" "requests/s" "$(jget "$f" range per_sec)" higher
        record "$r" "$kind" "range $label, 100 clients" "p99 ms" "$(jget "$f" range latency_ms.p99)" lower
      fi
    done
  fi
  if (( TXN_TOTAL > 0 )) && wants txn; then
    log "  txn-put: 100 clients, 4 puts per txn"
    if f=$(bench "$kind" "$r" txn-put --target-leader --conns 10 --clients 100 txn-put --txn-ops 4 --key-space-size 100000 \
        --val-size 256 --total "$TXN_TOTAL"); then
      record "$r" "$kind" "txn-put (4 ops), 100 clients" "requests/s" "$(jget "$f" txn-put per_sec)" higher
    fi
  fi
  if (( LEASE_TOTAL > 0 )) && wants lease; then
    log "  lease-keepalive: 100 clients"
    if f=$(bench "$kind" "$r" lease --conns 10 --clients 100 lease-keepalive --total "$LEASE_TOTAL"); then
      record "$r" "$kind" "lease-keepalive, 100 clients" "requests/s" "$(jget "$f" lease-keepalive per_sec)" higher
    fi
  fi
  if wants watch; then
    log "  watch-latency: $WL_WATCHERS watchers"
    if f=$(bench "$kind" "$r" watch-latency --conns 10 watch-latency --streams "$WL_STREAMS" \
        --watchers-per-stream "$WL_PER_STREAM" --put-total "$WL_PUTS" --put-rate "$WL_RATE"); then
      record "$r" "$kind" "watch-latency, $WL_WATCHERS watchers" "p99 ms after put ack" "$(jget "$f" "watch-latency (event after put ack)" latency_ms.p99)" lower
      record "$r" "$kind" "watch-latency, $WL_WATCHERS watchers" "p99 ms after put sent" "$(jget "$f" "watch-latency (event after put sent)" latency_ms.p99)" lower
    fi

    # Memory per watcher: the members' RSS while the watchers exist, minus before, over watchers.
    log "  watch: $WM_WATCHERS watchers (creation, fan-out, memory)"
    local before peak now file="$OUT/json/r$r-$kind-watch.json"
    before=$(cluster_rss_kb); peak=$before
    local cpu_before; cpu_before=$(cluster_cpu_ticks)
    timeout "$RUN_TIMEOUT_S" "$BENCH" --endpoints "$(endpoints "$kind")" --json --conns 10 --clients 10 watch --streams "$WM_STREAMS" \
      --watch-per-stream "$WM_PER_STREAM" --watched-key-total 100 --put-total 100 \
      >"$file" 2>"$OUT/logs/bench-r$r-$kind-watch.err" &
    local bpid=$!
    PIDS+=("$bpid")
    while kill -0 "$bpid" 2>/dev/null; do
      now=$(cluster_rss_kb); (( now > peak )) && peak=$now
      sleep 0.1
    done
    if wait "$bpid"; then
      record "$r" "$kind" "watch, $WM_WATCHERS watchers" "watchers created/s" "$(jget "$file" watch-create per_sec)" higher
      record "$r" "$kind" "watch, $WM_WATCHERS watchers" "events delivered/s" "$(jget "$file" events per_sec)" higher
      record "$r" "$kind" "watch, $WM_WATCHERS watchers" "server bytes per watcher" "$(( (peak - before) * 1024 / WM_WATCHERS ))" lower
      record_cpu "$r" "$kind" watch "$file" "$cpu_before"
      note_errors "$kind" "$r" watch "$file"
    else
      run_failed "$kind" "$r" watch
    fi
  fi

  local pid max=0 kb
  for pid in "${CLUSTER_PIDS[@]}"; do kb=$(proc_kb "$pid" VmHWM); (( kb > max )) && max=$kb; done
  record "$r" "$kind" "server peak RSS (largest member)" "MiB" "$(( max / 1024 ))" lower
}

# ---------------------------------------------------------------------------------------------
log "results in $OUT; $MEMBERS member(s) per cluster, $ROUNDS round(s)$([[ $QUICK == 1 ]] && echo ', quick')"
MINI_OK=1
if [[ -z "$MINIETCD" ]]; then
  MINI_OK=0; echo "minietcd was not found at $TARGET/release/minietcd: etcd figures only" >>"$OUT/notes.txt"
fi
for (( r = 1; r <= ROUNDS; r++ )); do
  order=(etcd minietcd)
  (( r % 2 == 0 )) && order=(minietcd etcd)
  for kind in "${order[@]}"; do
    [[ "$kind" == minietcd && $MINI_OK == 0 ]] && continue
    log "round $r: $kind"
    if start_cluster "$kind" "$r"; then
      run_suite "$kind" "$r"
    elif [[ "$kind" == minietcd ]]; then
      MINI_OK=0
      echo "minietcd failed to start or never became healthy (logs in $OUT/logs): etcd figures only" >>"$OUT/notes.txt"
    else
      die "etcd failed to start (logs in $OUT/logs)"
    fi
    stop_cluster
  done
done

print_table "$OUT"
log "JSON reports: $OUT/json, table: $OUT/table.txt"

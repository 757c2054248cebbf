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
#
# Scale (issue 14): scripts/bench-vs-etcd.sh --scale [--scale-keys N] [--snapshot-count C]
#   --scale       instead of the suite, one round per server of: load N keys of 256 bytes
#                 (100 clients), overwrite N/5 of them; RSS and data-dir size of the largest
#                 member; put p50/p99 of a quiet rate-limited load (10 clients, 1000 puts/s,
#                 15 s); a range of 10,000 keys (--limit) and a full count (--count-only);
#                 restart of a follower (kill -9) until it serves a linearizable read; a new
#                 member (member add, started empty) until it has caught up through a snapshot,
#                 with put p99 meanwhile; the quiet put again on the four members; physical
#                 compaction of every revision so far, with put p99 meanwhile. Prints the
#                 table and one line per target of issue 14. Each rate-limited load also
#                 leaves a timeline (one JSON line per second: requests, p50, p99, max, wall
#                 clock) in DIR/logs/bench-r1-KIND-scale-put-*.err, to line up with the logs.
#   --scale-keys N   keys loaded (default 1000000; the overwrite is N/5)
#   --snapshot-count C  --snapshot-count of both servers (default etcd's 100000; for a small N
#                 pick one well below N, so that the new member still needs a snapshot)
#   --scale-servers LIST  which servers to run, etcd,minietcd (default both; one alone is for
#                 quick iterations on a single figure, the ratios need both)
#   Both servers also get --quota-backend-bytes 8589934592. On 2 cores, both servers
#   together: 1.5 minutes for N = 20000, 3 minutes for N = 200000, and an estimated 15 to 20
#   minutes for N = 1000000 (the load dominates); see docs/benchmarks.md.
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
SCALE=0
SCALE_KEYS=1000000
SNAPSHOT_COUNT=""
SCALE_SERVERS="etcd,minietcd"

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
    --scale) SCALE=1 ;;
    --scale-keys) SCALE_KEYS="${2:?--scale-keys needs a number}"; shift ;;
    --scale-keys=*) SCALE_KEYS="${1#*=}" ;;
    --snapshot-count) SNAPSHOT_COUNT="${2:?--snapshot-count needs a number}"; shift ;;
    --snapshot-count=*) SNAPSHOT_COUNT="${1#*=}" ;;
    --scale-servers) SCALE_SERVERS="${2:?--scale-servers needs a list}"; shift ;;
    --scale-servers=*) SCALE_SERVERS="${1#*=}" ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
if [[ $SCALE == 1 ]]; then
  (( MEMBERS == 3 )) || die "--scale runs three-member clusters; --single does not apply"
  [[ "$SCALE_KEYS" =~ ^[1-9][0-9]*$ ]] && (( SCALE_KEYS >= 1000 )) || die "--scale-keys must be a number of at least 1000"
  SNAPSHOT_COUNT="${SNAPSHOT_COUNT:-100000}"
  [[ "$SNAPSHOT_COUNT" =~ ^[1-9][0-9]*$ ]] || die "--snapshot-count must be a positive number"
  [[ -z "$ROUNDS" ]] || die "--scale runs one round per server; --rounds does not apply"
  ROUNDS=1
elif [[ -n "$SNAPSHOT_COUNT" || "$SCALE_KEYS" != 1000000 || "$SCALE_SERVERS" != "etcd,minietcd" ]]; then
  die "--scale-keys, --snapshot-count and --scale-servers go with --scale"
fi
for s in ${SCALE_SERVERS//,/ }; do
  [[ "$s" == etcd || "$s" == minietcd ]] || die "--scale-servers: unknown server $s (etcd, minietcd)"
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
  read -r members rounds _ <"$dir/meta"
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

# Scale rows (--scale): their workload names; the targets of issue 14 refer to them.
SC_LOAD="scale: load N keys, 100 clients"
SC_OVERWRITE="scale: overwrite N/5 keys, 100 clients"
SC_SIZE="scale: after load + overwrite, largest member"
SC_QUIET="scale: put 1000/s, 10 clients, quiet"
SC_SNAP="scale: put 1000/s, 10 clients, during snapshot catch-up"
SC_COMPACT="scale: put 1000/s, 10 clients, during compaction"
SC_QUIET4="scale: put 1000/s, 10 clients, quiet, 4 members"
SC_LIMIT="scale: range from the first key, --limit 10000"
SC_COUNT="scale: range over every key, --count-only"
SC_RESTART="scale: follower kill -9 to a linearizable read"
SC_CATCHUP="scale: new member, start to caught up (snapshot)"
SC_COMPACTION="scale: physical compaction of every revision"

# print_scale_targets DIR: one line per target of issue 14, from DIR/results.tsv.
print_scale_targets() {
  python3 - "$1/results.tsv" "$SC_SIZE" "$SC_RESTART" "$SC_CATCHUP" "$SC_QUIET" "$SC_SNAP" "$SC_COMPACT" <<'PY' | tee -a "$1/table.txt"
import sys
path, size, restart, catchup, quiet, snap, compact = sys.argv[1:8]
v = {}
for line in open(path):
    _, kind, workload, metric, value, _ = line.rstrip("\n").split("\t")
    try:
        v[(kind, workload, metric)] = float(value)
    except ValueError:
        pass
print("\nTargets (issue 14):")
def no_worse(label, workload, metric):
    e, m = v.get(("etcd", workload, metric)), v.get(("minietcd", workload, metric))
    if e is None or m is None:
        print(f"  {label}: not measured")
    else:
        print(f"  {label} no worse than etcd's: {'met' if m <= e else 'missed'} (minietcd {m:g}, etcd {e:g})")
no_worse("RSS after the load", size, "RSS MiB")
no_worse("restart to a linearizable read", restart, "s")
no_worse("catch-up of a new member", catchup, "s")
def within_2x(label, workload):
    q, d = v.get(("minietcd", quiet, "p99 ms")), v.get(("minietcd", workload, "p99 ms"))
    eq, ed = v.get(("etcd", quiet, "p99 ms")), v.get(("etcd", workload, "p99 ms"))
    ref = f"; etcd {ed / eq:.2f}x its quiet p99" if eq and ed is not None else ""
    if not q or d is None:
        print(f"  put p99 {label} at most 2x quiet: not measured{ref}")
    else:
        print(f"  put p99 {label} at most 2x quiet: {'met' if d <= 2 * q else 'missed'} "
              f"(minietcd {d / q:.2f}x its quiet p99{ref})")
within_2x("during snapshot catch-up", snap)
within_2x("during compaction", compact)
PY
}

if [[ -n "$REPORT" ]]; then
  [[ -f "$REPORT/results.tsv" && -f "$REPORT/meta" ]] || die "$REPORT holds no results of this script"
  print_table "$REPORT"
  if [[ "$(awk '{print $3}' "$REPORT/meta")" == scale ]]; then print_scale_targets "$REPORT"; fi
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
# Flags both servers get besides those below (--scale sets the snapshot count and quota).
SERVER_FLAGS=()
member_dir() { echo "$OUT/data/$1-r$2-m$3"; }
member_url() { echo "http://127.0.0.1:$(client_port "$1" "$2")"; }
# start_member KIND ROUND I INITIAL_CLUSTER STATE LOG_LEVEL: starts member I on its data dir
# as it is (a restart reuses it) with the flags every member gets; the pid lands in
# MEMBER_PID and PIDS, the output is appended to the member's log.
MEMBER_PID=""
start_member() {
  local kind=$1 round=$2 i=$3 initial=$4 state=$5 level=$6 bin cu pu
  [[ "$kind" == etcd ]] && bin="$(command -v etcd)" || bin="$MINIETCD"
  cu="$(member_url "$kind" "$i")"
  pu="http://127.0.0.1:$(peer_port "$kind" "$i")"
  # etcd 3.4 warns at start-up unless it is told to use its structured logger.
  local extra=()
  [[ "$kind" == etcd ]] && extra=(--logger=zap)
  "$bin" --name "$kind$i" --data-dir "$(member_dir "$kind" "$round" "$i")" \
    --listen-client-urls "$cu" --advertise-client-urls "$cu" \
    --listen-peer-urls "$pu" --initial-advertise-peer-urls "$pu" \
    --initial-cluster "$initial" --initial-cluster-state "$state" \
    --initial-cluster-token "bench-$kind-r$round" --log-level="$level" \
    "${SERVER_FLAGS[@]}" "${extra[@]}" >>"$OUT/logs/$kind-r$round-m$i.log" 2>&1 &
  MEMBER_PID=$!
  PIDS+=($!)
}
# initial_cluster KIND COUNT: --initial-cluster for members 0..COUNT-1.
initial_cluster() {
  local kind=$1 i initial=""
  for (( i = 0; i < $2; i++ )); do
    initial+="${initial:+,}$kind$i=http://127.0.0.1:$(peer_port "$kind" "$i")"
  done
  echo "$initial"
}
# wait_healthy KIND: 0 once every member answers `endpoint health` (30 s at most).
wait_healthy() {
  local kind=$1 deadline=$(( SECONDS + 30 )) pid
  while (( SECONDS < deadline )); do
    for pid in "${CLUSTER_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { log "$kind member $pid exited (log: $OUT/logs/)"; return 1; }
    done
    if etcdctl --endpoints "$(endpoints "$kind")" --command-timeout=1s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "$kind did not become healthy within 30 s (log: $OUT/logs/)"
  return 1
}

# start_cluster KIND ROUND: starts the members with identical flags; 0 when all are healthy.
start_cluster() {
  local kind=$1 round=$2 i initial p
  CLUSTER_PIDS=()
  initial="$(initial_cluster "$kind" "$MEMBERS")"
  for (( i = 0; i < MEMBERS; i++ )); do
    for p in "$(client_port "$kind" "$i")" "$(peer_port "$kind" "$i")"; do
      port_busy "$p" && die "port $p is in use: pick another --port-base"
    done
  done
  for (( i = 0; i < MEMBERS; i++ )); do
    local dir
    dir="$(member_dir "$kind" "$round" "$i")"
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
    DATA_DIRS+=("$dir")
    start_member "$kind" "$round" "$i" "$initial" new warn
    CLUSTER_PIDS+=("$MEMBER_PID")
  done
  wait_healthy "$kind"
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
echo "$MEMBERS $ROUNDS $([[ $SCALE == 1 ]] && echo scale || echo suite)" >"$OUT/meta"
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
# Scale (--scale, issue 14): one cluster per server, loaded with SCALE_KEYS keys, then measured.
# The rate-limited put load of the quiet figure and of the loads during events.
SCALE_RATE=1000
SCALE_QUIET_SECS=15
# Longest an event (catch-up, compaction, restart) may take before the run gives up.
SCALE_EVENT_TIMEOUT_S=3600

# elapsed T0 T1: seconds between two $EPOCHREALTIME readings.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# status_field URL FIELD: a field of the member's own `endpoint status` (revision, leader,
# member_id), empty when it does not answer.
status_field() {
  etcdctl --endpoints "$1" --dial-timeout=1s --command-timeout=2s endpoint status -w json 2>/dev/null |
    python3 -c '
import json, sys
s = json.load(sys.stdin)[0]["Status"]
print({"revision": s["header"]["revision"], "member_id": s["header"]["member_id"], "leader": s["leader"]}[sys.argv[1]])' "$2" 2>/dev/null || true
}
# leader_index KIND: the index of the member that is leader, per the members themselves.
leader_index() {
  local kind=$1 i
  for (( i = 0; i < MEMBERS; i++ )); do
    local url id leader
    url=$(member_url "$kind" "$i")
    id=$(status_field "$url" member_id)
    leader=$(status_field "$url" leader)
    if [[ -n "$id" && "$id" == "$leader" ]]; then echo "$i"; return 0; fi
  done
  log "  no member of $kind says it is the leader"
  return 1
}

# bench_start KIND ROUND NAME ARGS...: a run in the background (BENCH_PID, BENCH_FILE); no
# timeout wrapper, so that SIGINT reaches it (it then stops and reports what it sent).
BENCH_PID=""; BENCH_FILE=""; BENCH_CPU=""
bench_start() {
  local kind=$1 round=$2 name=$3; shift 3
  BENCH_FILE="$OUT/json/r$round-$kind-$name.json"
  BENCH_CPU=$(cluster_cpu_ticks)
  "$BENCH" --endpoints "$(endpoints "$kind")" --json "$@" >"$BENCH_FILE" 2>"$OUT/logs/bench-r$round-$kind-$name.err" &
  BENCH_PID=$!
  PIDS+=("$BENCH_PID")
}
# bench_finish KIND ROUND NAME: waits for the run of bench_start; 0 when its report is usable.
bench_finish() {
  if ! wait "$BENCH_PID"; then run_failed "$1" "$2" "$3"; return 1; fi
  record_cpu "$2" "$1" "$3" "$BENCH_FILE" "$BENCH_CPU"
  note_errors "$1" "$2" "$3" "$BENCH_FILE"
}
# bench_stop KIND ROUND NAME: ends a run of bench_start early (SIGINT) and finishes it.
bench_stop() {
  kill -INT "$BENCH_PID" 2>/dev/null || true
  bench_finish "$@"
}
# rate_load_start KIND ROUND NAME TOTAL: the rate-limited put load, on keys of the loaded space.
rate_load_start() {
  bench_start "$1" "$2" "$3" --interval-ms 1000 --target-leader --conns 10 --clients 10 put --key-size 8 --val-size 256 \
    --key-space-size "$SCALE_KEYS" --rate "$SCALE_RATE" --total "$4"
}
# record_put_latency ROUND KIND WORKLOAD METRICS...: p50/p99 of the last bench_start run.
record_put_latency() {
  local r=$1 kind=$2 workload=$3 m; shift 3
  for m in "$@"; do record "$r" "$kind" "$workload" "$m ms" "$(jget "$BENCH_FILE" put "latency_ms.$m")" lower; done
}

# load_with_progress KIND ROUND NAME TOTAL: TOTAL puts of sequential keys (0, 1, ... modulo the
# key space) from 100 clients, a progress line every 5 s; fails when the revision stalls 120 s.
load_with_progress() {
  local kind=$1 r=$2 name=$3 total=$4 url rev last=0 stalled=0 t_last t_now k
  bench_start "$kind" "$r" "$name" --target-leader --conns 10 --clients 100 put --key-size 8 --val-size 256 \
    --sequential-keys --key-space-size "$SCALE_KEYS" --total "$total"
  url=$(member_url "$kind" 0)
  last=$(status_field "$url" revision); last=${last:-0}
  t_last=$EPOCHREALTIME
  while kill -0 "$BENCH_PID" 2>/dev/null; do
    for (( k = 0; k < 25; k++ )); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$BENCH_PID" 2>/dev/null || break
    rev=$(status_field "$url" revision); t_now=$EPOCHREALTIME
    if [[ -n "$rev" ]]; then
      log "    $name: revision $rev, $(awk -v d="$(( rev - last ))" -v t="$(elapsed "$t_last" "$t_now")" 'BEGIN { printf "%.0f", d / t }') puts/s"
      if (( rev == last )); then stalled=$(( stalled + 5 )); else stalled=0; fi
      last=$rev; t_last=$t_now
    fi
    if (( stalled >= 120 )); then
      log "  $name: no progress on $kind for 120 s; stopping it"
      kill -INT "$BENCH_PID" 2>/dev/null || true
    fi
  done
  bench_finish "$kind" "$r" "$name"
}

# range_note_field FILE FIELD: key-values or count of the last range response of a report.
range_note_field() {
  python3 - "$1" "$2" <<'PY'
import json, re, sys
for note in json.load(open(sys.argv[1])).get("notes", []):
    m = re.match(r"each range response: (\d+) key-values, count (\d+)", note)
    if m:
        print(m.group(1) if sys.argv[2] == "kvs" else m.group(2)); break
else:
    print("")
PY
}

# The log line each server writes when a member installs a snapshot from its leader (etcd 3.4
# at info level; minietcd's state machine).
snapshot_installed_pattern() {
  [[ "$1" == etcd ]] && echo '"msg":"applied snapshot"' || echo 'snapshot installed'
}

run_scale() {
  local kind=$1 r=1 f li url t0 t1 k
  local overwrite=$(( SCALE_KEYS / 5 ))

  # a. The load and the overwrite.
  log "  load: $SCALE_KEYS keys of 256 bytes, 100 clients"
  load_with_progress "$kind" "$r" scale-load "$SCALE_KEYS" &&
    record "$r" "$kind" "$SC_LOAD" "puts/s" "$(jget "$BENCH_FILE" put per_sec)" higher
  log "  overwrite: $overwrite keys"
  load_with_progress "$kind" "$r" scale-overwrite "$overwrite" &&
    record "$r" "$kind" "$SC_OVERWRITE" "puts/s" "$(jget "$BENCH_FILE" put per_sec)" higher

  # b. Memory and disk of the largest member.
  local pid kb rss=0 du_max=0 i
  for pid in "${CLUSTER_PIDS[@]}"; do kb=$(proc_kb "$pid" VmRSS); (( kb > rss )) && rss=$kb; done
  for (( i = 0; i < MEMBERS; i++ )); do
    kb=$(du -sk "$(member_dir "$kind" "$r" "$i")" | awk '{print $1}'); (( kb > du_max )) && du_max=$kb
  done
  record "$r" "$kind" "$SC_SIZE" "RSS MiB" "$(( rss / 1024 ))" lower
  record "$r" "$kind" "$SC_SIZE" "data dir MiB" "$(( du_max / 1024 ))" lower
  log "  after the load: RSS $(( rss / 1024 )) MiB, data dir $(( du_max / 1024 )) MiB (largest member)"

  # c. Put latency with nothing else running.
  log "  quiet put: $SCALE_RATE/s for $SCALE_QUIET_SECS s"
  rate_load_start "$kind" "$r" scale-put-quiet $(( SCALE_RATE * SCALE_QUIET_SECS ))
  bench_finish "$kind" "$r" scale-put-quiet && record_put_latency "$r" "$kind" "$SC_QUIET" p50 p99

  # d. A range of 10,000 keys, and a count of every key.
  log "  range: --limit 10000, and --count-only over every key"
  if f=$(bench "$kind" "$r" scale-range-limit --conns 1 --clients 1 range "" --from-key --limit 10000 --total 20); then
    record "$r" "$kind" "$SC_LIMIT" "p50 ms" "$(jget "$f" range latency_ms.p50)" lower
    record "$r" "$kind" "$SC_LIMIT" "p99 ms" "$(jget "$f" range latency_ms.p99)" lower
    k=$(range_note_field "$f" kvs)
    [[ "$k" == 10000 || ( $SCALE_KEYS -lt 10000 && "$k" == "$SCALE_KEYS" ) ]] ||
      echo "$kind: the range with --limit 10000 returned ${k:-no} key-values" >>"$OUT/notes.txt"
  fi
  if f=$(bench "$kind" "$r" scale-count --conns 1 --clients 1 range "" --from-key --count-only --total 10); then
    record "$r" "$kind" "$SC_COUNT" "p50 ms" "$(jget "$f" range latency_ms.p50)" lower
    k=$(range_note_field "$f" count)
    [[ "$k" == "$SCALE_KEYS" ]] || echo "$kind: the full count was ${k:-missing}, not $SCALE_KEYS" >>"$OUT/notes.txt"
  fi

  # e. Restart of a follower: kill -9, start it again, time to its first linearizable read.
  if li=$(leader_index "$kind"); then
    local fol=$(( (li + 1) % MEMBERS ))
    log "  restart: kill -9 of follower $kind$fol"
    pid=${CLUSTER_PIDS[$fol]}
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    url=$(member_url "$kind" "$fol")
    t0=$EPOCHREALTIME
    start_member "$kind" "$r" "$fol" "$(initial_cluster "$kind" "$MEMBERS")" new warn
    CLUSTER_PIDS[fol]=$MEMBER_PID
    local deadline=$(( SECONDS + SCALE_EVENT_TIMEOUT_S )) ok=0
    while (( SECONDS < deadline )) && kill -0 "$MEMBER_PID" 2>/dev/null; do
      # Wait for the listener first: etcdctl's dial of a closed port backs off for a second.
      if port_busy "$(client_port "$kind" "$fol")" &&
        etcdctl --endpoints "$url" --dial-timeout=1s --command-timeout=10s get scale-restart-probe >/dev/null 2>&1; then
        ok=1; break
      fi
      sleep 0.02
    done
    t1=$EPOCHREALTIME
    if (( ok )); then
      record "$r" "$kind" "$SC_RESTART" "s" "$(elapsed "$t0" "$t1")" lower
      log "    served a linearizable read after $(elapsed "$t0" "$t1") s"
    else
      echo "$kind: the restarted follower never served a linearizable read (log: $OUT/logs/$kind-r$r-m$fol.log)" >>"$OUT/notes.txt"
    fi
    wait_healthy "$kind" || true
  fi

  # f. A new member catches up through a snapshot while the put load runs.
  if li=$(leader_index "$kind"); then
    local leader_url new_url r0 rev dir p
    leader_url=$(member_url "$kind" "$li")
    new_url=$(member_url "$kind" "$MEMBERS")
    for p in "$(client_port "$kind" "$MEMBERS")" "$(peer_port "$kind" "$MEMBERS")"; do
      port_busy "$p" && die "port $p is in use: pick another --port-base"
    done
    r0=$(status_field "$leader_url" revision)
    log "  catch-up: member add $kind$MEMBERS, then started empty, until it reaches revision $r0"
    # etcd refuses a new voter ("unhealthy cluster") until every member has been connected for
    # 5 s, which the restarted follower may not have been yet: retry that for a minute.
    local add_log="$OUT/logs/$kind-r$r-member-add.log" add_deadline=$(( SECONDS + 60 ))
    until etcdctl --endpoints "$leader_url" member add "$kind$MEMBERS" \
        --peer-urls="http://127.0.0.1:$(peer_port "$kind" "$MEMBERS")" >>"$add_log" 2>&1; do
      if ! grep -q "unhealthy cluster" "$add_log" || (( SECONDS >= add_deadline )); then
        die "member add failed on $kind (see $add_log)"
      fi
      sleep 0.5
    done
    rate_load_start "$kind" "$r" scale-put-snapshot $(( SCALE_RATE * SCALE_EVENT_TIMEOUT_S ))
    sleep 1
    dir=$(member_dir "$kind" "$r" "$MEMBERS")
    rm -rf "$dir"; DATA_DIRS+=("$dir")
    t0=$EPOCHREALTIME
    start_member "$kind" "$r" "$MEMBERS" "$(initial_cluster "$kind" $(( MEMBERS + 1 )))" existing info
    CLUSTER_PIDS+=("$MEMBER_PID")
    local deadline=$(( SECONDS + SCALE_EVENT_TIMEOUT_S )) ok=0
    while (( SECONDS < deadline )) && kill -0 "$MEMBER_PID" 2>/dev/null; do
      rev=$(status_field "$new_url" revision)
      if [[ -n "$rev" ]] && (( rev >= r0 )); then ok=1; break; fi
      sleep 0.1
    done
    t1=$EPOCHREALTIME
    bench_stop "$kind" "$r" scale-put-snapshot && record_put_latency "$r" "$kind" "$SC_SNAP" p99
    (( ok )) || die "the new $kind member did not catch up within $SCALE_EVENT_TIMEOUT_S s (log: $OUT/logs/$kind-r$r-m$MEMBERS.log)"
    grep -qF "$(snapshot_installed_pattern "$kind")" "$OUT/logs/$kind-r$r-m$MEMBERS.log" ||
      die "the new $kind member caught up without installing a snapshot (no \"$(snapshot_installed_pattern "$kind")\" in $OUT/logs/$kind-r$r-m$MEMBERS.log): its leader still had the whole log; raise --scale-keys or lower --snapshot-count"
    record "$r" "$kind" "$SC_CATCHUP" "s" "$(elapsed "$t0" "$t1")" lower
    log "    caught up through a snapshot after $(elapsed "$t0" "$t1") s"
  fi

  # The same quiet put with the new member in: the compaction below runs on four members,
  # and this is its reference (not a target of issue 14, which compares with the quiet put of
  # three).
  log "  quiet put, 4 members: $SCALE_RATE/s for $SCALE_QUIET_SECS s"
  rate_load_start "$kind" "$r" scale-put-quiet-4 $(( SCALE_RATE * SCALE_QUIET_SECS ))
  bench_finish "$kind" "$r" scale-put-quiet-4 && record_put_latency "$r" "$kind" "$SC_QUIET4" p50 p99

  # g. Physical compaction of every revision so far while the put load runs.
  if li=$(leader_index "$kind"); then
    local leader_url rev
    leader_url=$(member_url "$kind" "$li")
    rev=$(status_field "$leader_url" revision)
    log "  compaction: compact $rev --physical"
    rate_load_start "$kind" "$r" scale-put-compact $(( SCALE_RATE * SCALE_EVENT_TIMEOUT_S ))
    sleep 1
    t0=$EPOCHREALTIME
    if etcdctl --endpoints "$leader_url" --command-timeout="${SCALE_EVENT_TIMEOUT_S}s" compact "$rev" --physical \
        >/dev/null 2>>"$OUT/logs/$kind-r$r-compact.err"; then
      t1=$EPOCHREALTIME
      record "$r" "$kind" "$SC_COMPACTION" "s" "$(elapsed "$t0" "$t1")" lower
      echo "$kind: compacted at revision $rev" >>"$OUT/notes.txt"
      log "    compacted in $(elapsed "$t0" "$t1") s"
    else
      echo "$kind: compact $rev --physical failed (see $OUT/logs/$kind-r$r-compact.err)" >>"$OUT/notes.txt"
    fi
    bench_stop "$kind" "$r" scale-put-compact && record_put_latency "$r" "$kind" "$SC_COMPACT" p99
  fi
  return 0
}


# ---------------------------------------------------------------------------------------------
log "results in $OUT; $MEMBERS member(s) per cluster, $ROUNDS round(s)$([[ $QUICK == 1 ]] && echo ', quick')"
MINI_OK=1
if [[ -z "$MINIETCD" ]]; then
  MINI_OK=0; echo "minietcd was not found at $TARGET/release/minietcd: etcd figures only" >>"$OUT/notes.txt"
fi
if [[ $SCALE == 1 ]]; then
  SERVER_FLAGS=(--snapshot-count "$SNAPSHOT_COUNT" --quota-backend-bytes 8589934592)
  log "scale: $SCALE_KEYS keys, overwrite $(( SCALE_KEYS / 5 )), --snapshot-count $SNAPSHOT_COUNT"
  SCALE_START=$SECONDS
  for kind in etcd minietcd; do
    [[ "$kind" == minietcd && $MINI_OK == 0 ]] && continue
    [[ ",$SCALE_SERVERS," == *",$kind,"* ]] || continue
    log "scale: $kind"
    start_cluster "$kind" 1 || die "$kind failed to start (logs in $OUT/logs)"
    KIND_START=$SECONDS
    run_scale "$kind"
    log "scale: $kind took $(( SECONDS - KIND_START )) s"
    stop_cluster
  done
  print_table "$OUT"
  print_scale_targets "$OUT"
  log "scale run took $(( SECONDS - SCALE_START )) s; JSON reports: $OUT/json, table: $OUT/table.txt"
  exit 0
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

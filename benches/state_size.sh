#!/usr/bin/env bash
# Issue 2 benchmark: how stategraph's state operations scale with state size,
# next to the nearest terraform operations on the same state file.
#
# For each N in $SIZES it generates a synthetic terraform_data state of N
# instances (fixtures/genstate.py), then measures, $REPS times each, with GNU
# time (wall seconds, peak RSS):
#   stategraph state push FILE          (a fresh state name per repetition)
#   stategraph state pull > out
#   stategraph cone ADDR1..ADDR12 --json (12 leaf instances of one team)
#   terraform show -json FILE > /dev/null
#   terraform state list -state=FILE > /dev/null
# and prints a markdown table of medians. It starts a throwaway PostgreSQL
# cluster (as the `postgres` user when run as root, durable by default, 127.0.0.1 on a
# free port) and removes it and every temp file on exit.
#
# Environment:
#   SIZES="10000 100000"   state sizes (instances)
#   REPS=3                 repetitions per operation
#   SEED=1                 genstate seed
#   CONE_K=12              addresses given to `stategraph cone`
#   BENCH_STATEGRAPH=1     0: only generate and time the terraform rows
#   STATEGRAPH_BIN         use this binary instead of `cargo build --release`
#   STATEGRAPH_TERRAFORM   terraform binary (default: terraform on PATH)
#   STATEGRAPH_PG_BIN      directory holding initdb/pg_ctl/postgres
#   OUT_DIR=benches/results  where state_size.md and state_size.csv go
#   KEEP_WORK=1            keep the work dir (states, outputs, logs)
#   PG_DURABLE=on          fsync/synchronous_commit/full_page_writes of the
#                          bench cluster; "off" measures without disk flushes
#
# Usage: benches/state_size.sh        (from anywhere; needs python3, terraform,
#                                      PostgreSQL server binaries, GNU time)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-"10000 100000"}
REPS=${REPS:-3}
SEED=${SEED:-1}
CONE_K=${CONE_K:-12}
BENCH_STATEGRAPH=${BENCH_STATEGRAPH:-1}
OUT_DIR=$(realpath -m "${OUT_DIR:-$ROOT/benches/results}")
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(SIZES|REPS|SEED|CONE_K|STATEGRAPH_BIN|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
TIME_BIN=/usr/bin/time

say() { printf 'state_size.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"

# ---------------------------------------------------------------- tools

command -v python3 >/dev/null || die "python3 not found (genstate.py needs it)"
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e %M' true 2>/dev/null ||
    die "GNU time not found at $TIME_BIN; install it (apt-get install time)"

TERRAFORM=${STATEGRAPH_TERRAFORM:-terraform}
command -v "$TERRAFORM" >/dev/null ||
    die "terraform not found on PATH; install terraform >= 1.5 or set STATEGRAPH_TERRAFORM"
TERRAFORM=$(command -v "$TERRAFORM")


# ---------------------------------------------------------------- work dir and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench.XXXXXX")


cleanup() {
    local rc=$?
    stop_postgres
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        say "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- PostgreSQL



db_size() {
    [[ -x $PG_BIN/psql ]] || { echo "?"; return; }
    as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d stategraph -Atc \
        "select pg_size_pretty(pg_database_size('stategraph'))" 2>/dev/null || echo "?"
}

# ---------------------------------------------------------------- measuring

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure LABEL N STDOUT_FILE CMD...: runs CMD $REPS times; "{rep}" in an
# argument is replaced by the repetition number. Fails the bench if CMD fails.
measure() {
    local label=$1 n=$2 out=$3
    shift 3
    local times="$WORK/times.$$" rep args a
    : >"$times"
    for ((rep = 1; rep <= REPS; rep++)); do
        args=()
        for a in "$@"; do args+=("${a//\{rep\}/$rep}"); done
        if ! $TIME_BIN -f '%e %M' -o "$WORK/time.one" "${args[@]}" >"$out" 2>"$WORK/stderr.one"; then
            say "$label (N=$n, rep $rep) failed: ${args[*]}"
            tail -n 40 "$WORK/stderr.one" >&2
            exit 1
        fi
        tail -n1 "$WORK/time.one" >>"$times"
    done
    local wall rss
    wall=$(awk '{print $1}' "$times" | median)
    rss=$(awk '{print $2}' "$times" | median)
    local mib
    mib=$(awk -v k="$rss" 'BEGIN { printf "%.0f", k / 1024 }')
    say "$label N=$n: wall $(tr '\n' ' ' <<<"$(awk '{print $1}' "$times")")s, median $wall s, $mib MiB"
    echo "| $label | $n | $wall | $mib |" >>"$WORK/rows.md"
    echo "$label,$n,$wall,$mib" >>"$WORK/rows.csv"
}

# ---------------------------------------------------------------- main

if [[ $BENCH_STATEGRAPH == 1 ]]; then
    if [[ -z ${STATEGRAPH_BIN:-} ]]; then
        say "building stategraph (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet --bin stategraph) ||
            die "cargo build --release failed"
        STATEGRAPH_BIN="$ROOT/target/release/stategraph"
    fi
    [[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
    PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-512MB} start_postgres
    DATABASE_URL=$PG_URL
fi

# terraform runs in an empty dir with its own CLI config (the machine's may not exist).
mkdir -p "$WORK/tf"
: >"$WORK/tf/cli.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/tf/cli.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
unset TF_DATA_DIR TF_WORKSPACE TF_CLI_ARGS
cd "$WORK/tf"
: >"$WORK/rows.md"
echo "operation,n,wall_s,rss_mib" >"$WORK/rows.csv"

for n in $SIZES; do
    state="$WORK/state-$n.json"
    say "generating N=$n (seed $SEED)"
    gen_start=$(date +%s.%N)
    python3 "$ROOT/fixtures/genstate.py" --instances "$n" --seed "$SEED" -o "$state" \
        --change-set "$CONE_K" --change-set-file "$WORK/changeset-$n.txt"
    gen_end=$(date +%s.%N)
    say "  $(du -m "$state" | cut -f1) MiB in $(awk -v a="$gen_start" -v b="$gen_end" 'BEGIN{printf "%.1f", b-a}') s"
    mapfile -t cone_addrs <"$WORK/changeset-$n.txt"

    if [[ $BENCH_STATEGRAPH == 1 ]]; then
        sg=("$STATEGRAPH_BIN" --database-url "$DATABASE_URL")
        measure "stategraph state push" "$n" /dev/null "${sg[@]}" --state "bench-$n-{rep}" state push "$state"
        say "  database size after $REPS pushes: $(db_size)"
        measure "stategraph state pull" "$n" "$WORK/pulled-$n.json" "${sg[@]}" --state "bench-$n-1" state pull
        if python3 - "$state" "$WORK/pulled-$n.json" <<'EOF'; then
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a == b else 1)
EOF
            say "  pulled state == pushed state (JSON equal)"
        else
            say "  WARNING: the pulled state differs from the pushed one"
        fi
        rm -f "$WORK/pulled-$n.json"
        measure "stategraph cone ($CONE_K addrs)" "$n" "$WORK/cone-$n.json" \
            "${sg[@]}" --state "bench-$n-1" cone "${cone_addrs[@]}" --json
        python3 - "$WORK/cone-$n.json" <<'EOF' >&2
import json, sys
try:
    c = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"  WARNING: cone --json printed invalid JSON: {e}")
print(f"  cone: write {len(c.get('write', []))}, read {len(c.get('read', []))}, "
      f"instances {c.get('instances')}, timings {c.get('timings')}")
EOF
        # The cone computation alone (the command also loads and builds the graph).
        python3 - "$WORK/cone-$n.json" "$n" <<'EOF' >>"$WORK/rows.csv"
import json, sys
t = json.load(open(sys.argv[1])).get("timings", {})
print(f"stategraph cone computation,{sys.argv[2]},{t.get('cone_ms', 0) / 1e3:.6f},")
print(f"stategraph cone graph load,{sys.argv[2]},{t.get('load_ms', 0) / 1e3:.3f},")
print(f"stategraph cone graph build,{sys.argv[2]},{t.get('build_ms', 0) / 1e3:.3f},")
EOF
    fi
    measure "terraform show -json" "$n" /dev/null "$TERRAFORM" show -json "$state"
    measure "terraform state list" "$n" /dev/null "$TERRAFORM" state list -state="$state"
    rm -f "$state"
done

tf_version=$("$TERRAFORM" version -json | python3 -c 'import json, sys; print(json.load(sys.stdin)["terraform_version"])' || echo '?')
{
    echo "# State size: push, pull, cone, next to terraform"
    echo
    echo "- command: \`${ENVLINE}${CMDLINE}\`"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), load at end: $(cut -d' ' -f1-3 /proc/loadavg); terraform $tf_version; ${PG_VERSION:-no PostgreSQL} (PG_DURABLE=$PG_DURABLE)"
    echo "- REPS=$REPS, SEED=$SEED; medians over the repetitions; \`cone\` is given $CONE_K leaf instances of one team"
    echo
    echo "| operation | N | wall median (s) | peak RSS median (MiB) |"
    echo "|---|---:|---:|---:|"
    cat "$WORK/rows.md"
    grep '^stategraph cone computation' "$WORK/rows.csv" |
        awk -F, '{ printf "| stategraph cone: the computation alone (from `cone --json` timings, last run) | %s | %s |  |\n", $2, $3 }'
} >"$WORK/report.md"
echo
cat "$WORK/report.md"
mkdir -p "$OUT_DIR"
cp "$WORK/report.md" "$OUT_DIR/state_size.md"
cp "$WORK/rows.csv" "$OUT_DIR/state_size.csv"
say "report: $OUT_DIR/state_size.md"

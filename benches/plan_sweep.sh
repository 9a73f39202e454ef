#!/usr/bin/env bash
# Plan wall time vs state size: `terraform plan` (full refresh) vs
# `stategraph plan` for a K-instance change of one team, for N in $NS.
#
# For each N: fixtures/genconfig/genconfig.py writes an N-instance
# terraform_data configuration (teams/subsystems, ~1.48 reference edges per
# instance, depth 8) and a tfvars replacing K instances of one team (plus
# their descendants: the change cone). The state is built once (BUILD=terraform:
# `terraform apply` with the local backend, quadratic in N; BUILD=stategraph:
# `stategraph apply` into an empty stored state, which runs terraform on a
# private local state and so is quadratic too), pushed into stategraph (for
# BUILD=terraform), then REPS times, alternating which tool goes first:
#   terraform plan -var-file=change.tfvars              (full refresh)
#   stategraph --state sweepN plan -var-file=change.tfvars
# each in its own copy of the config. Both plans must show exactly the cone
# (cone to add, cone to destroy), or the bench fails.
#
# Environment:
#   NS="100 500 1000 2847"  state sizes
#   REPS=3                  repetitions (medians reported)
#   K=12                    instances changed (layer alarm of team TEAM)
#   TEAM=0                  team (name or index) of the change
#   SEED=1                  generator seed
#   BUILD=terraform         how the state is built: terraform | stategraph
#   OUT_DIR=benches/results where plan_sweep.md, plan_sweep.csv and plan_vs_n.png go
#   PLOT=1                  0 skips benches/plot.py
#   STATEGRAPH_BIN          use this binary instead of `cargo build --release`
#   STATEGRAPH_TERRAFORM    terraform binary (default: terraform on PATH)
#   STATEGRAPH_PG_BIN       directory holding initdb/pg_ctl/postgres
#   KEEP_WORK=1             keep the work dir
#   PG_DURABLE=on           fsync etc. of the bench cluster
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS=${NS:-"100 500 1000 2847"}
REPS=${REPS:-3}
K=${K:-12}
TEAM=${TEAM:-0}
SEED=${SEED:-1}
BUILD=${BUILD:-terraform}
OUT_DIR=${OUT_DIR:-$ROOT/benches/results}
PLOT=${PLOT:-1}
TIME_BIN=/usr/bin/time
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(NS|REPS|K|TEAM|SEED|BUILD|STATEGRAPH_BIN|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
BENCH_START=$(date +%s)

say() { printf 'plan_sweep.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"

[[ $BUILD == terraform || $BUILD == stategraph ]] || die "BUILD must be terraform or stategraph"
command -v python3 >/dev/null || die "python3 not found"
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e' true 2>/dev/null || die "GNU time not found at $TIME_BIN"
TERRAFORM=${STATEGRAPH_TERRAFORM:-terraform}
command -v "$TERRAFORM" >/dev/null || die "terraform not found; set STATEGRAPH_TERRAFORM"
TERRAFORM=$(command -v "$TERRAFORM")
export STATEGRAPH_TERRAFORM=$TERRAFORM
GEN="$ROOT/fixtures/genconfig/genconfig.py"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench-sweep.XXXXXX")
cleanup() {
    local rc=$?
    stop_postgres
    if [[ ${KEEP_WORK:-0} == 1 ]]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "?" || b == "?") print "?"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# run_timed RESULT_FILE LOG CMD...: appends the wall time of CMD to RESULT_FILE.
run_timed() {
    local res=$1 log=$2
    shift 2
    if ! $TIME_BIN -f '%e' -o "$WORK/time.one" "$@" >"$log" 2>&1; then
        say "failed: $*"; tail -n 40 "$log" >&2; exit 1
    fi
    tail -n1 "$WORK/time.one" >>"$res"
}

# check_plan LOG CONE WHO: the plan replaces exactly CONE instances.
check_plan() {
    grep -q "^Plan: $2 to add, 0 to change, $2 to destroy" "$1" ||
        { tail -n 15 "$1" >&2; die "$3 plan did not plan exactly the $2-instance cone"; }
}

if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    say "building stategraph (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin stategraph) || die "cargo build --release failed"
    STATEGRAPH_BIN="$ROOT/target/release/stategraph"
fi
[[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
start_postgres
export STATEGRAPH_DATABASE_URL=$PG_URL
: >"$WORK/empty.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/empty.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 CI=true
export STATEGRAPH_DATA_DIR="$WORK/sg-data"
unset TF_DATA_DIR TF_WORKSPACE TF_CLI_ARGS STATEGRAPH_STATE TF_LOG
TF_VERSION=$("$TERRAFORM" version -json | python3 -c 'import json, sys; print(json.load(sys.stdin)["terraform_version"])' || echo '?')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

mkdir -p "$OUT_DIR"
MD="$WORK/plan_sweep.md"
CSV="$WORK/plan_sweep.csv"
echo "n,edges,depth,teams,changed,cone,build_s,push_s,tf_plan_s,sg_plan_s,sg_over_tf,tf_refreshed,sg_refreshed" >"$CSV"
ROWS="$WORK/rows.md"
: >"$ROWS"

for N in $NS; do
    d="$WORK/n$N"
    mkdir -p "$d"
    python3 "$GEN" --resources "$N" --seed "$SEED" --out "$d/build" --change "$K" --team "$TEAM" \
        --tfvars "$d/change.tfvars" --json >"$d/summary.json" || die "genconfig failed"
    read -r edges depth teams changed cone < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); c = s["change"]
print(s["edges"], s["depth"], s["teams"], c["changed"], c["cone"])' "$d/summary.json")
    cp -r "$d/build" "$d/tf"
    cp -r "$d/build" "$d/sg"
    say "N=$N: $edges edges, depth $depth, $teams teams; change: $changed instances, cone $cone"

    t0=$(now)
    if [[ $BUILD == terraform ]]; then
        say "  building the state with terraform apply (local backend)"
        (cd "$d/build" && "$TERRAFORM" init -input=false -no-color >/dev/null &&
            "$TERRAFORM" apply -auto-approve -input=false -no-color >"$d/build.log" 2>&1) ||
            { tail -n 30 "$d/build.log" >&2; die "initial apply failed"; }
        t1=$(now); build_s=$(elapsed "$t0" "$t1")
        t0=$(now)
        "$STATEGRAPH_BIN" --state "sweep$N" state push "$d/build/terraform.tfstate" >"$d/push.log" 2>&1 ||
            { cat "$d/push.log" >&2; die "state push failed"; }
        t1=$(now); push_s=$(elapsed "$t0" "$t1")
        cp "$d/build/terraform.tfstate" "$d/tf/terraform.tfstate"
    else
        say "  building the state with stategraph apply"
        (cd "$d/build" && "$STATEGRAPH_BIN" --state "sweep$N" apply -auto-approve -no-color >"$d/build.log" 2>&1) ||
            { tail -n 30 "$d/build.log" >&2; die "initial stategraph apply failed"; }
        t1=$(now); build_s=$(elapsed "$t0" "$t1"); push_s="-"
        "$STATEGRAPH_BIN" --state "sweep$N" state pull >"$d/tf/terraform.tfstate" 2>"$d/pull.log" ||
            { cat "$d/pull.log" >&2; die "state pull failed"; }
    fi
    say "  built in ${build_s}s, push ${push_s}s"
    (cd "$d/tf" && "$TERRAFORM" init -input=false -no-color >/dev/null)

    : >"$d/tf.res"; : >"$d/sg.res"
    for ((rep = 1; rep <= REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        for who in $order; do
            if [[ $who == tf ]]; then
                (cd "$d/tf" && run_timed "$d/tf.res" "$d/tf.log" \
                    "$TERRAFORM" plan -input=false -no-color -var-file="$d/change.tfvars")
                check_plan "$d/tf.log" "$cone" terraform
            else
                (cd "$d/sg" && run_timed "$d/sg.res" "$d/sg.log" \
                    "$STATEGRAPH_BIN" --state "sweep$N" plan -no-color -var-file="$d/change.tfvars")
                check_plan "$d/sg.log" "$cone" stategraph
            fi
        done
        say "  rep $rep: terraform $(tail -n1 "$d/tf.res")s, stategraph $(tail -n1 "$d/sg.res")s"
    done
    tfw=$(median <"$d/tf.res"); sgw=$(median <"$d/sg.res")
    tfr=$(grep -c 'Refreshing state' "$d/tf.log" || true)
    sgr=$(grep -c 'Refreshing state' "$d/sg.log" || true)
    echo "$N,$edges,$depth,$teams,$changed,$cone,$build_s,$push_s,$tfw,$sgw,$(ratio "$sgw" "$tfw"),$tfr,$sgr" >>"$CSV"
    echo "| $N | $edges | $depth | $cone | $build_s | $push_s | $tfw | $sgw | **$(ratio "$sgw" "$tfw")** | $(ratio "$tfw" "$sgw") | $tfr | $sgr |" >>"$ROWS"
done

{
    echo "# Plan wall time vs state size: terraform plan vs stategraph plan"
    echo
    echo "- command: \`${ENVLINE}${CMDLINE}\`"
    echo "- machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "- terraform $TF_VERSION; $PG_VERSION (PG_DURABLE=$PG_DURABLE); $("$STATEGRAPH_BIN" --version 2>/dev/null || echo stategraph)"
    echo "- configs: \`fixtures/genconfig/genconfig.py --resources N --seed $SEED\`; change: \`--change $K --team $TEAM\` (K instances of one team's alarm layer replaced, plus their descendants = the cone)"
    echo "- state built with: $BUILD; medians over $REPS repetitions, the tools alternating which goes first"
    echo "- terraform plan refreshes everything (default -parallelism=10); both plans verified to replace exactly the cone"
    echo
    echo "| N | edges | depth | cone | build (s) | push (s) | terraform plan (s) | stategraph plan (s) | sg / tf | speed-up | tf refreshed | sg refreshed |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$ROWS"
    echo
    echo "Refreshed: \"Refreshing state...\" lines in one plan's output. Total bench time: $(($(date +%s) - BENCH_START)) s."
} >"$MD"
cat "$MD"
cp "$MD" "$OUT_DIR/plan_sweep.md"
cp "$CSV" "$OUT_DIR/plan_sweep.csv"
if [[ $PLOT == 1 ]]; then
    python3 "$ROOT/benches/plot.py" "$OUT_DIR/plan_sweep.csv" "$OUT_DIR/plan_vs_n.png" ||
        say "plot.py failed (results are in $OUT_DIR/plan_sweep.csv)"
fi

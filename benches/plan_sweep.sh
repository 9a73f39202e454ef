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
# each in its own copy of the config. Both plans must show exactly the change
# (terraform_data: cone to add, cone to destroy; aws: K to change), or the
# bench fails.
#
# stategraph runs terraform through the timing wrapper of benches/lib.sh, so
# each stategraph plan is split into phases: init, discovery plan, scoped
# refresh, show -json, targeted plan, other terraform commands, and the rest (stategraph itself:
# PostgreSQL, the cone, materializing and merging state, process start-ups).
#
# FLAVOUR=aws: the same shapes as aws resources on a local moto server
# (genconfig.py --flavour aws; every aws terraform command costs ~7 s of
# provider start-up, so N defaults small), with the API requests of each plan
# counted. LATENCY_MS=D puts benches/latency_proxy.py (D ms per request)
# between the plans and moto (the state builds go straight to moto).
#
# Environment:
#   FLAVOUR=terraform_data  terraform_data | aws
#   NS="100 500 1000 2847"  state sizes (FLAVOUR=aws: "100 300")
#   LATENCY_MS=0            FLAVOUR=aws: added latency per API request during the plans
#   REPS=3                  repetitions (medians reported)
#   K=12                    instances changed (layer alarm of team TEAM)
#   CHANGE=edit             how the change is made: edit (the changed blocks' text is
#                           edited, as a user edits main.tf: genconfig.py --edited) or
#                           tfvars (-var-file=change.tfvars with a `gen` map entry per
#                           instance; every block reads var.gen, so stategraph cannot
#                           tell from the configuration which blocks change and runs
#                           terraform's full refresh-less plan to find out)
#   TEAM=root (edit), 0 (tfvars)  team (name, index, or root: the first team of plain
#                           root resources) of the change
#   SEED=1                  generator seed
#   BUILD=terraform         how the state is built: terraform | stategraph
#   OUT_DIR=benches/results where plan_sweep.md, plan_sweep.csv, plan_vs_n.png and
#                           plan_vs_n_phases.png go (FLAVOUR=aws: plan_sweep_aws.*, plan_vs_n_aws*.png)
#   PLOT=1                  0 skips benches/plot.py
#   STATEGRAPH_BIN          use this binary instead of `cargo build --release`
#   STATEGRAPH_TERRAFORM    terraform binary (default: terraform on PATH)
#   STATEGRAPH_PG_BIN       directory holding initdb/pg_ctl/postgres
#   STATEGRAPH_TF_PLUGIN_MIRROR   provider mirror holding hashicorp/aws (FLAVOUR=aws)
#   STATEGRAPH_PYTHON       python with moto[server] (FLAVOUR=aws; default python3)
#   KEEP_WORK=1             keep the work dir
#   PG_DURABLE=on           fsync etc. of the bench cluster
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLAVOUR=${FLAVOUR:-terraform_data}
if [[ $FLAVOUR == aws ]]; then NS=${NS:-"100 300"}; else NS=${NS:-"100 500 1000 2847"}; fi
LATENCY_MS=${LATENCY_MS:-0}
REPS=${REPS:-3}
K=${K:-12}
CHANGE=${CHANGE:-edit}
if [[ $CHANGE == edit ]]; then TEAM=${TEAM:-root}; else TEAM=${TEAM:-0}; fi
SEED=${SEED:-1}
BUILD=${BUILD:-terraform}
OUT_DIR=${OUT_DIR:-$ROOT/benches/results}
PLOT=${PLOT:-1}
TIME_BIN=/usr/bin/time
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(FLAVOUR|NS|LATENCY_MS|REPS|K|CHANGE|TEAM|SEED|BUILD|STATEGRAPH_BIN|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
BENCH_START=$(date +%s)

say() { printf 'plan_sweep.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

[[ $BUILD == terraform || $BUILD == stategraph ]] || die "BUILD must be terraform or stategraph"
[[ $CHANGE == edit || $CHANGE == tfvars ]] || die "CHANGE must be edit or tfvars"
[[ $FLAVOUR == terraform_data || $FLAVOUR == aws ]] || die "FLAVOUR must be terraform_data or aws"
command -v python3 >/dev/null || die "python3 not found"
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e' true 2>/dev/null || die "GNU time not found at $TIME_BIN"
TERRAFORM=${STATEGRAPH_TERRAFORM:-terraform}
command -v "$TERRAFORM" >/dev/null || die "terraform not found; set STATEGRAPH_TERRAFORM"
TERRAFORM=$(command -v "$TERRAFORM")
GEN="$ROOT/fixtures/genconfig/genconfig.py"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench-sweep.XXXXXX")
cleanup() {
    local rc=$?
    stop_moto
    stop_postgres
    if [[ ${KEEP_WORK:-0} == 1 ]]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_timed RESULT_FILE LOG CMD...: appends the wall time of CMD to RESULT_FILE.
run_timed() {
    local res=$1 log=$2
    shift 2
    if ! $TIME_BIN -f '%e' -o "$WORK/time.one" "$@" >"$log" 2>&1; then
        say "failed: $*"; tail -n 40 "$log" >&2; exit 1
    fi
    tail -n1 "$WORK/time.one" >>"$res"
}

# check_plan LOG EXPECTED WHO: the plan's summary line is EXPECTED ("A to add, C to change, D to destroy").
check_plan() {
    grep -q "^Plan: $2" "$1" ||
        { tail -n 15 "$1" >&2; die "$3 plan did not plan exactly the change ($2)"; }
}

if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    say "building stategraph (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin stategraph) || die "cargo build --release failed"
    STATEGRAPH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stategraph"
fi
[[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
start_postgres
export STATEGRAPH_DATABASE_URL=$PG_URL
make_tf_wrapper "$TERRAFORM"
export STATEGRAPH_TERRAFORM="$WORK/tf-wrapper"
: >"$WORK/empty.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/empty.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 CI=true
export STATEGRAPH_DATA_DIR="$WORK/sg-data"
unset TF_DATA_DIR TF_WORKSPACE TF_CLI_ARGS STATEGRAPH_STATE TF_LOG
TF_VERSION=$("$TERRAFORM" version -json | python3 -c 'import json, sys; print(json.load(sys.stdin)["terraform_version"])' || echo '?')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
SUFFIX=""
PLAN_EP=""
if [[ $FLAVOUR == aws ]]; then
    SUFFIX="_aws"
    write_mirror_tfrc "$WORK/mirror.tfrc" ||
        die "no terraform provider mirror with hashicorp/aws (set STATEGRAPH_TF_PLUGIN_MIRROR)"
    export TF_CLI_CONFIG_FILE="$WORK/mirror.tfrc"
    start_moto || die "moto's server did not start (pip install 'moto[server]')"
    if [[ $LATENCY_MS != 0 ]]; then
        start_latency_proxy "$LATENCY_MS" || die "the latency proxy did not start"
        PLAN_EP="http://127.0.0.1:$PROXY_PORT"
    fi
fi
requests() { if [[ $FLAVOUR == aws ]]; then moto_requests; else echo 0; fi; }

mkdir -p "$OUT_DIR"
MD="$WORK/plan_sweep$SUFFIX.md"
CSV="$WORK/plan_sweep$SUFFIX.csv"
echo "flavour,n,edges,depth,teams,changed,cone,build_s,push_s,first_plan_s,tf_plan_s,sg_plan_s,sg_over_tf,tf_refreshed,sg_refreshed,tf_requests,sg_requests,sg_over_tf_requests,latency_ms,ph_init_s,ph_discovery_s,ph_refresh_s,ph_show_s,ph_targeted_s,ph_other_tf_s,ph_stategraph_s" >"$CSV"
ROWS="$WORK/rows.md"
PROWS="$WORK/phase-rows.md"
: >"$ROWS"; : >"$PROWS"

for N in $NS; do
    d="$WORK/n$N"
    mkdir -p "$d"
    python3 "$GEN" --flavour "$FLAVOUR" --prefix "n$N" --resources "$N" --seed "$SEED" --out "$d/build" \
        --change "$K" --team "$TEAM" --tfvars "$d/change.tfvars" \
        $([[ $CHANGE == edit ]] && echo "--edited $d/main.tf.edited") --json >"$d/summary.json" ||
        die "genconfig failed"
    if [[ $CHANGE == edit ]]; then
        VARFILE=()
    else
        VARFILE=(-var-file="$d/change.tfvars")
    fi
    read -r edges depth teams changed cone expect < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); c = s["change"]; p = c["plan"]
print(s["edges"], s["depth"], s["teams"], c["changed"], c["cone"], "%s/%s/%s" % (p["add"], p["change"], p["destroy"]))' "$d/summary.json")
    expect=$(awk -F/ '{ printf "%s to add, %s to change, %s to destroy", $1, $2, $3 }' <<<"$expect")
    [[ $FLAVOUR == aws ]] && moto_provider_tf >"$d/build/moto_provider.tf"
    cp -r "$d/build" "$d/tf"
    cp -r "$d/build" "$d/sg"
    if [[ -n $PLAN_EP ]]; then
        moto_provider_tf "$PLAN_EP" >"$d/tf/moto_provider.tf"
        moto_provider_tf "$PLAN_EP" >"$d/sg/moto_provider.tf"
    fi
    say "N=$N ($FLAVOUR): $edges edges, depth $depth, $teams teams; change: $changed instances, cone $cone; expected plan: $expect"

    t0=$(now)
    if [[ $BUILD == terraform ]]; then
        say "  building the state with terraform apply (local backend)"
        (cd "$d/build" && "$TERRAFORM" init -input=false -no-color >"$d/init.log" 2>&1 &&
            "$TERRAFORM" apply -auto-approve -input=false -no-color >"$d/build.log" 2>&1) ||
            { tail -n 30 "$d/init.log" "$d/build.log" >&2; die "initial apply failed"; }
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
    # A real checkout carries the committed dependency lock file (stategraph
    # runs init with -lockfile=readonly).
    if [[ -f $d/build/.terraform.lock.hcl ]]; then
        cp "$d/build/.terraform.lock.hcl" "$d/tf/"
        cp "$d/build/.terraform.lock.hcl" "$d/sg/"
    fi
    # Both checkouts initialized, as a user's are.
    (cd "$d/tf" && "$TERRAFORM" init -input=false -no-color >/dev/null)
    (cd "$d/sg" && "$TERRAFORM" init -input=false -no-color >/dev/null)
    # stategraph's first plan of the unchanged configuration after the push
    # (no change: it runs terraform's full refresh-less plan once and
    # records the baseline every later plan compares the configuration with;
    # after a `stategraph apply` the baseline is there already).
    t0=$(now)
    (cd "$d/sg" && "$STATEGRAPH_BIN" --state "sweep$N" plan -no-color >"$d/first.log" 2>&1) ||
        { tail -n 30 "$d/first.log" >&2; die "stategraph's first plan failed"; }
    t1=$(now); first_s=$(elapsed "$t0" "$t1")
    grep -q "No changes" "$d/first.log" || { tail -n 30 "$d/first.log" >&2; die "the unchanged configuration planned changes"; }
    say "  stategraph's first plan after the push (records the baseline): ${first_s}s"
    if [[ $CHANGE == edit ]]; then
        cp "$d/main.tf.edited" "$d/tf/main.tf"
        cp "$d/main.tf.edited" "$d/sg/main.tf"
    fi

    : >"$d/tf.res"; : >"$d/sg.res"; : >"$d/tf.req"; : >"$d/sg.req"; : >"$d/phases"
    mkdir -p "$d/sglogs"
    for ((rep = 1; rep <= REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        for who in $order; do
            r0=$(requests)
            if [[ $who == tf ]]; then
                (cd "$d/tf" && run_timed "$d/tf.res" "$d/tf.log" \
                    "$TERRAFORM" plan -input=false -no-color "${VARFILE[@]}")
                echo "$(($(requests) - r0))" >>"$d/tf.req"
                check_plan "$d/tf.log" "$expect" terraform
            else
                (cd "$d/sg" && SG_TF_LOG="$d/sglogs/$rep.tflog" run_timed "$d/sg.res" "$d/sg.log" \
                    "$STATEGRAPH_BIN" --state "sweep$N" plan -no-color "${VARFILE[@]}")
                echo "$(($(requests) - r0))" >>"$d/sg.req"
                check_plan "$d/sg.log" "$expect" stategraph
                tf_phases "$d/sglogs/$rep.tflog" "$(tail -n1 "$d/sg.res")" >>"$d/phases"
            fi
        done
        if [[ $FLAVOUR == aws ]]; then
            say "  rep $rep: terraform $(tail -n1 "$d/tf.res")s/$(tail -n1 "$d/tf.req") req, stategraph $(tail -n1 "$d/sg.res")s/$(tail -n1 "$d/sg.req") req (phases: $(tail -n1 "$d/phases"))"
        else
            say "  rep $rep: terraform $(tail -n1 "$d/tf.res")s, stategraph $(tail -n1 "$d/sg.res")s (phases: $(tail -n1 "$d/phases"))"
        fi
    done
    tfw=$(median <"$d/tf.res"); sgw=$(median <"$d/sg.res")
    tfq=$(median <"$d/tf.req" | awk '{ printf "%.0f", $1 }'); sgq=$(median <"$d/sg.req" | awk '{ printf "%.0f", $1 }')
    tfr=$(grep -c 'Refreshing state' "$d/tf.log" || true)
    sgr=$(grep -c 'Refreshing state' "$d/sg.log" || true)
    ph=()
    for c in 1 2 3 4 5 6 7; do ph+=("$(col "$d/phases" "$c")"); done
    reqratio="-"
    [[ $FLAVOUR == aws ]] && reqratio=$(ratio "$sgq" "$tfq")
    echo "$FLAVOUR,$N,$edges,$depth,$teams,$changed,$cone,$build_s,$push_s,$first_s,$tfw,$sgw,$(ratio "$sgw" "$tfw"),$tfr,$sgr,$tfq,$sgq,$reqratio,$LATENCY_MS,$(IFS=,; echo "${ph[*]}")" >>"$CSV"
    if [[ $FLAVOUR == aws ]]; then
        echo "| $N | $edges | $depth | $cone | $build_s | $push_s | $first_s | $tfw | $sgw | **$(ratio "$sgw" "$tfw")** | $tfr | $sgr | $tfq | $sgq | **$reqratio** |" >>"$ROWS"
    else
        echo "| $N | $edges | $depth | $cone | $build_s | $push_s | $first_s | $tfw | $sgw | **$(ratio "$sgw" "$tfw")** | $(ratio "$tfw" "$sgw") | $tfr | $sgr |" >>"$ROWS"
    fi
    echo "| $N | $sgw | ${ph[0]} | ${ph[1]} | ${ph[2]} | ${ph[3]} | ${ph[4]} | ${ph[5]} | ${ph[6]} | $tfw |" >>"$PROWS"
done

{
    echo "# Plan wall time vs state size: terraform plan vs stategraph plan ($FLAVOUR)"
    echo
    echo "- command: \`${ENVLINE}${CMDLINE}\`"
    echo "- machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- terraform $TF_VERSION; $PG_VERSION (PG_DURABLE=$PG_DURABLE); $("$STATEGRAPH_BIN" --version 2>/dev/null || echo stategraph)"
    echo "- configs: \`fixtures/genconfig/genconfig.py --flavour $FLAVOUR --resources N --seed $SEED\`; change: \`--change $K --team $TEAM\` (K instances of one team's alarm layer changed; cone = them plus their descendants), made by CHANGE=$CHANGE ($([[ $CHANGE == edit ]] && echo "main.tf edited: the changed blocks' text" || echo "-var-file=change.tfvars"))"
    echo "- sg first plan: stategraph's first plan of the unchanged configuration after the state push (no change; it records the baseline later plans compare the configuration with)"
    echo "- state built with: $BUILD; medians over $REPS repetitions, the tools alternating which goes first"
    echo "- terraform plan refreshes everything (default -parallelism=10); both plans verified to show exactly the change"
    if [[ $FLAVOUR == aws ]]; then
        echo "- aws resources on a local moto server; API requests counted in moto's log; added latency per request during the plans: ${LATENCY_MS} ms"
        echo
        echo "| N | edges | depth | cone | build (s) | push (s) | sg first plan (s) | terraform plan (s) | stategraph plan (s) | sg / tf | tf refreshed | sg refreshed | tf API requests | sg API requests | sg / tf requests |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    else
        echo
        echo "| N | edges | depth | cone | build (s) | push (s) | sg first plan (s) | terraform plan (s) | stategraph plan (s) | sg / tf | speed-up | tf refreshed | sg refreshed |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    fi
    cat "$ROWS"
    echo
    echo "Where stategraph's plan time goes (medians per phase over the repetitions, so they need not add up exactly to the median total; \"stategraph itself\" is the wall time outside terraform: PostgreSQL, the cone, state materialization, process start-ups):"
    echo
    echo "| N | stategraph plan (s) | init | discovery plan | scoped refresh | show -json | targeted plan | other terraform | stategraph itself | terraform plan (s), for comparison |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$PROWS"
    echo
    echo "Refreshed: \"Refreshing state...\" lines in one plan's output. Total bench time: $(($(date +%s) - BENCH_START)) s."
} >"$MD"
cat "$MD"
cp "$MD" "$OUT_DIR/plan_sweep$SUFFIX.md"
cp "$CSV" "$OUT_DIR/plan_sweep$SUFFIX.csv"
if [[ $PLOT == 1 ]]; then
    python3 "$ROOT/benches/plot.py" "$OUT_DIR/plan_sweep$SUFFIX.csv" "$OUT_DIR/plan_vs_n$SUFFIX.png" ||
        say "plot.py failed (results are in $OUT_DIR/plan_sweep$SUFFIX.csv)"
fi

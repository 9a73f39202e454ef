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
# Every plan is timed with GNU time: wall, CPU (user + system, terraform and
# its providers included) and peak RSS (of the largest process).
#
# FLAVOUR=aws: the same shapes as aws resources on a local moto server
# (genconfig.py --flavour aws; every aws terraform command costs seconds of
# provider start-up), with the API requests of each plan counted in moto's
# log. LATENCIES="0 50" runs every plan at each added latency per API
# request, in one run: the plans go through benches/latency_proxy.py, whose
# delay is switched between passes (0 ms: through the proxy, no delay); the
# state builds go straight to moto.
#
# The floor: a terraform command with nothing to do (`plan -refresh=false`
# of a one-resource configuration with the same provider) is timed REPS
# times, so that the report can say how much of each plan is terraform's
# fixed cost per command (provider start-up and schema loading).
#
# Environment:
#   FLAVOUR=terraform_data  terraform_data | aws
#   NS="100 500 1000 2847"  state sizes (both flavours)
#   LATENCIES="0 50"        FLAVOUR=aws: added latencies per API request (ms), each
#                           plan run at every one (LATENCY_MS=D: LATENCIES=D)
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
#   UNSHARED=0              1: each repetition also runs stategraph with
#                           STATEGRAPH_SHARED_PROVIDERS=0 (terraform starts its
#                           providers itself), reported side by side with the default
#   KEEP_WORK=1             keep the work dir
#   PG_DURABLE=on           fsync etc. of the bench cluster
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLAVOUR=${FLAVOUR:-terraform_data}
NS=${NS:-"100 500 1000 2847"}
if [[ $FLAVOUR == aws ]]; then LATENCIES=${LATENCIES:-${LATENCY_MS:-"0 50"}}; else LATENCIES=0; fi
REPS=${REPS:-3}
K=${K:-12}
CHANGE=${CHANGE:-edit}
if [[ $CHANGE == edit ]]; then TEAM=${TEAM:-root}; else TEAM=${TEAM:-0}; fi
SEED=${SEED:-1}
BUILD=${BUILD:-terraform}
OUT_DIR=$(realpath -m "${OUT_DIR:-$ROOT/benches/results}")
PLOT=${PLOT:-1}
TIME_BIN=/usr/bin/time
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(FLAVOUR|NS|LATENCIES|LATENCY_MS|REPS|K|CHANGE|TEAM|SEED|BUILD|STATEGRAPH_BIN|STATEGRAPH_SHARED_PROVIDERS|UNSHARED|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
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
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e %M' true 2>/dev/null || die "GNU time not found at $TIME_BIN"
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

# run_timed RESULT_FILE LOG CMD...: appends "wall cpu rss_kib" of CMD to RESULT_FILE.
run_timed() {
    local res=$1 log=$2
    shift 2
    if ! $TIME_BIN -f '%e %U %S %M' -o "$WORK/time.one" "$@" >"$log" 2>&1; then
        say "failed: $*"; tail -n 40 "$log" >&2; exit 1
    fi
    tail -n1 "$WORK/time.one" | awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' >>"$res"
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
    if [[ $LATENCIES != 0 ]]; then
        start_latency_proxy 0 || die "the latency proxy did not start"
        PLAN_EP="http://127.0.0.1:$PROXY_PORT"
    fi
fi
requests() { if [[ $FLAVOUR == aws ]]; then moto_requests; else echo 0; fi; }
set_latency() { if [[ -n $PLAN_EP ]]; then proxy_set_delay "$1"; fi; }

# The floor: terraform with nothing to do, the same provider.
floor_dir="$WORK/floor"
mkdir -p "$floor_dir"
if [[ $FLAVOUR == aws ]]; then
    moto_provider_tf >"$floor_dir/moto_provider.tf"
    cat >"$floor_dir/main.tf" <<'EOF'
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
resource "aws_ssm_parameter" "floor" {
  name  = "/stategraph-bench/floor"
  type  = "String"
  value = "1"
}
EOF
else
    echo 'resource "terraform_data" "floor" { input = "1" }' >"$floor_dir/main.tf"
fi
(cd "$floor_dir" && "$TERRAFORM" init -input=false -no-color >"$floor_dir/init.log" 2>&1) ||
    { cat "$floor_dir/init.log" >&2; die "terraform init of the floor configuration failed"; }
: >"$WORK/floor.res"
for ((rep = 1; rep <= REPS; rep++)); do
    (cd "$floor_dir" && run_timed "$WORK/floor.res" "$floor_dir/plan.log" \
        "$TERRAFORM" plan -refresh=false -input=false -no-color)
done
FLOOR_S=$(col "$WORK/floor.res" 1); FLOOR_CPU=$(col "$WORK/floor.res" 2)
say "floor: one terraform command with nothing to do ($FLAVOUR): ${FLOOR_S}s wall, ${FLOOR_CPU}s CPU"

mkdir -p "$OUT_DIR"
MD="$WORK/plan_sweep$SUFFIX.md"
CSV="$WORK/plan_sweep$SUFFIX.csv"
echo "flavour,n,edges,depth,teams,changed,cone,build_s,push_s,first_plan_s,latency_ms,tf_plan_s,sg_plan_s,sg_over_tf,tf_cpu_s,sg_cpu_s,tf_rss_mib,sg_rss_mib,tf_refreshed,sg_refreshed,tf_requests,sg_requests,sg_over_tf_requests,sg_tf_commands,floor_s,ph_init_s,ph_discovery_s,ph_refresh_s,ph_show_s,ph_targeted_s,ph_other_tf_s,ph_stategraph_s,ph_side_by_side_s" >"$CSV"
ROWS="$WORK/rows.md"
BROWS="$WORK/build-rows.md"
PROWS="$WORK/phase-rows.md"
UROWS="$WORK/unshared-rows.md"
: >"$ROWS"; : >"$BROWS"; : >"$PROWS"; : >"$UROWS"
UNSHARED=${UNSHARED:-0}

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

    echo "| $N | $edges | $depth | $cone | $build_s | $push_s | $first_s |" >>"$BROWS"

    for lat in $LATENCIES; do
        : >"$d/tf-$lat.res"; : >"$d/sg-$lat.res"; : >"$d/tf-$lat.req"; : >"$d/sg-$lat.req"; : >"$d/sg0-$lat.res"
        : >"$d/phases-$lat"; : >"$d/ncmd-$lat"
        mkdir -p "$d/sglogs-$lat"
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        if [[ $UNSHARED == 1 ]]; then
            order="tf sg sg0"
            ((rep % 2 == 0)) && order="sg0 sg tf"
        fi
        for lat in $LATENCIES; do
            set_latency "$lat"
            for who in $order; do
                r0=$(requests)
                if [[ $who == tf ]]; then
                    (cd "$d/tf" && run_timed "$d/tf-$lat.res" "$d/tf-$lat.log" \
                        "$TERRAFORM" plan -input=false -no-color "${VARFILE[@]}")
                    echo "$(($(requests) - r0))" >>"$d/tf-$lat.req"
                    check_plan "$d/tf-$lat.log" "$expect" terraform
                elif [[ $who == sg0 ]]; then
                    (cd "$d/sg" && STATEGRAPH_SHARED_PROVIDERS=0 run_timed "$d/sg0-$lat.res" "$d/sg0-$lat.log" \
                        "$STATEGRAPH_BIN" --state "sweep$N" plan -no-color "${VARFILE[@]}")
                    check_plan "$d/sg0-$lat.log" "$expect" "stategraph (STATEGRAPH_SHARED_PROVIDERS=0)"
                else
                    tflog="$d/sglogs-$lat/$rep.tflog"
                    (cd "$d/sg" && SG_TF_LOG="$tflog" run_timed "$d/sg-$lat.res" "$d/sg-$lat.log" \
                        "$STATEGRAPH_BIN" --state "sweep$N" plan -no-color "${VARFILE[@]}")
                    echo "$(($(requests) - r0))" >>"$d/sg-$lat.req"
                    check_plan "$d/sg-$lat.log" "$expect" stategraph
                    tf_phases "$tflog" "$(tail -n1 "$d/sg-$lat.res" | cut -d' ' -f1)" >>"$d/phases-$lat"
                    # Commands that start terraform's graph and providers
                    # (`terraform version` does neither).
                    { grep -cv '^version ' "$tflog" || true; } >>"$d/ncmd-$lat"
                fi
            done
            line="  rep $rep"
            [[ $FLAVOUR == aws ]] && line+=", ${lat} ms"
            line+=": terraform $(tail -n1 "$d/tf-$lat.res" | cut -d' ' -f1)s"
            [[ $FLAVOUR == aws ]] && line+="/$(tail -n1 "$d/tf-$lat.req") req"
            line+=", stategraph $(tail -n1 "$d/sg-$lat.res" | cut -d' ' -f1)s"
            [[ $FLAVOUR == aws ]] && line+="/$(tail -n1 "$d/sg-$lat.req") req"
            [[ $UNSHARED == 1 ]] && line+=", unshared $(tail -n1 "$d/sg0-$lat.res" | cut -d' ' -f1)s"
            say "$line (phases: $(tail -n1 "$d/phases-$lat"))"
        done
    done
    for lat in $LATENCIES; do
        tfw=$(col "$d/tf-$lat.res" 1); sgw=$(col "$d/sg-$lat.res" 1)
        tfc=$(col "$d/tf-$lat.res" 2); sgc=$(col "$d/sg-$lat.res" 2)
        tfm=$(mib "$(col "$d/tf-$lat.res" 3)"); sgm=$(mib "$(col "$d/sg-$lat.res" 3)")
        tfq=$(median <"$d/tf-$lat.req" | awk '{ printf "%.0f", $1 }'); sgq=$(median <"$d/sg-$lat.req" | awk '{ printf "%.0f", $1 }')
        tfr=$(grep -c 'Refreshing state' "$d/tf-$lat.log" || true)
        sgr=$(grep -c 'Refreshing state' "$d/sg-$lat.log" || true)
        ncmd=$(median <"$d/ncmd-$lat" | awk '{ printf "%.0f", $1 }')
        ph=()
        for c in 1 2 3 4 5 6 7 8; do ph+=("$(col "$d/phases-$lat" "$c")"); done
        reqratio="-"
        [[ $FLAVOUR == aws ]] && reqratio=$(ratio "$sgq" "$tfq")
        echo "$FLAVOUR,$N,$edges,$depth,$teams,$changed,$cone,$build_s,$push_s,$first_s,$lat,$tfw,$sgw,$(ratio "$sgw" "$tfw"),$tfc,$sgc,$tfm,$sgm,$tfr,$sgr,$tfq,$sgq,$reqratio,$ncmd,$FLOOR_S,$(IFS=,; echo "${ph[*]}")" >>"$CSV"
        if [[ $FLAVOUR == aws ]]; then
            echo "| $N | $lat ms | $cone | $tfw | $sgw | **$(ratio "$sgw" "$tfw")** | $tfc | $sgc | $tfm | $sgm | $tfr | $sgr | $tfq | $sgq | **$reqratio** |" >>"$ROWS"
        else
            echo "| $N | $cone | $tfw | $sgw | **$(ratio "$sgw" "$tfw")** | $(ratio "$tfw" "$sgw") | $tfc | $sgc | $tfm | $sgm | $tfr | $sgr |" >>"$ROWS"
        fi
        if [[ $UNSHARED == 1 ]]; then
            sg0w=$(col "$d/sg0-$lat.res" 1)
            echo "| $N | $lat ms | $tfw | $sgw | $sg0w | **$(ratio "$sgw" "$tfw")** | $(ratio "$sg0w" "$tfw") | $(ratio "$sgw" "$sg0w") |" >>"$UROWS"
        fi
        floor_part=$(awk -v n="$ncmd" -v f="$FLOOR_S" 'BEGIN { printf "%.2f", n * f }')
        echo "| $N | $lat ms | $sgw | ${ph[0]} | ${ph[1]} | ${ph[2]} | ${ph[3]} | ${ph[4]} | ${ph[5]} | ${ph[6]} | ${ph[7]} | $ncmd | $floor_part | $tfw |" >>"$PROWS"
    done
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
    echo "- each plan timed with GNU time: wall, CPU (user + system, children included: terraform and its providers), peak RSS (largest process)"
    echo "- floor: one terraform command with nothing to do (\`plan -refresh=false\` of a one-resource $FLAVOUR configuration): **${FLOOR_S} s** wall, ${FLOOR_CPU} s CPU (medians of $REPS)"
    if [[ $FLAVOUR == aws ]]; then
        echo "- aws resources on a local moto server; API requests counted in moto's log; the plans go through benches/latency_proxy.py, which holds each request the given latency (0 ms: no delay), switched between passes in every repetition"
    fi
    echo
    echo "| N | edges | depth | cone | build (s) | push (s) | sg first plan (s) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    cat "$BROWS"
    echo
    if [[ $FLAVOUR == aws ]]; then
        echo "| N | added latency | cone | terraform plan (s) | stategraph plan (s) | sg / tf | CPU tf (s) | CPU sg (s) | RSS tf (MiB) | RSS sg (MiB) | tf refreshed | sg refreshed | tf API requests | sg API requests | sg / tf requests |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    else
        echo "| N | cone | terraform plan (s) | stategraph plan (s) | sg / tf | speed-up | CPU tf (s) | CPU sg (s) | RSS tf (MiB) | RSS sg (MiB) | tf refreshed | sg refreshed |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    fi
    cat "$ROWS"
    echo
    echo "Where stategraph's plan time goes (medians per phase over the repetitions, so they need not add up exactly to the median total). \"stategraph itself\" is the wall time when no terraform command ran (PostgreSQL, reading the configuration, the cone, writing the private state, process start-ups); \"side by side\" is how long two terraform commands ran at once (the scoped refresh next to the plan of the cone), counted in both of their phases; \"terraform commands\" counts those that load the configuration and providers (not \`terraform version\`), \"floor × commands\" is what they would cost with nothing to do, run one after the other:"
    echo
    echo "| N | added latency | stategraph plan (s) | init | discovery plan | scoped refresh | show -json | targeted plan | other terraform | stategraph itself | side by side | terraform commands | floor × commands (s) | terraform plan (s), for comparison |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$PROWS"
    echo
    if [[ $UNSHARED == 1 ]]; then
        echo "stategraph with its providers shared (the default: one process per provider for each plan) and with \\`STATEGRAPH_SHARED_PROVIDERS=0\\` (terraform starts them itself), in the same repetitions (medians):"
        echo
        echo "| N | added latency | terraform plan (s) | stategraph plan (s) | unshared (s) | sg / tf | unshared / tf | sg / unshared |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
        cat "$UROWS"
        echo
    fi
    echo "Refreshed: \"Refreshing state...\" lines in one plan's output. Total bench time: $(($(date +%s) - BENCH_START)) s."
} >"$MD"
cat "$MD"
cp "$MD" "$OUT_DIR/plan_sweep$SUFFIX.md"
cp "$CSV" "$OUT_DIR/plan_sweep$SUFFIX.csv"
if [[ $PLOT == 1 ]]; then
    python3 "$ROOT/benches/plot.py" "$OUT_DIR/plan_sweep$SUFFIX.csv" "$OUT_DIR/plan_vs_n$SUFFIX.png" ||
        say "plot.py failed (results are in $OUT_DIR/plan_sweep$SUFFIX.csv)"
fi

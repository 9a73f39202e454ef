#!/usr/bin/env bash
# Plan/apply benchmark: stategraph next to terraform alone, side by side.
#
# 1. Plan of a one-team change on a large terraform_data state
#    (fixtures/tf/teams, TEAMS x PER_TEAM): the state is built ONCE with
#    terraform alone (local state; slow, the local backend is quadratic), then
#    pushed into stategraph. Timed, REPS times, alternating the tools:
#      terraform plan -var 'gen={c="2"}'                  (full refresh)
#      terraform plan -var 'gen={c="2"}' -refresh=false   (reference)
#      stategraph --state bench plan -var 'gen={c="2"}'
#    each in its own copy of the config. Wall (GNU time %e), CPU (%U+%S, with
#    children: terraform and its providers), peak RSS (%M, largest process).
# 2. K concurrent disjoint applies (K in $KS) on an APPLY_TEAMS x
#    APPLY_PER_TEAM teams state. Each apply replaces its own team's base with
#    -var sleep_seconds=$SLEEP (so each takes >= SLEEP s), with a gen value
#    fresh to that repetition and K. stategraph: K checkouts, one stored state,
#    started together. terraform: K checkouts sharing ONE state, in
#    terraform's `pg` backend on the bench's PostgreSQL (TF_BACKEND=pg, the
#    default: backend "pg" { conn_str = ... }, database tfstate) or in one
#    local file (TF_BACKEND=local: -state=FILE), with -lock-timeout=300s so
#    they queue. Each checkout passes the
#    full gen map as it was when the repetition started, plus its own change
#    (an up-to-date checkout of the repository). terraform alone would revert
#    the other checkouts' changes with such a map (it applies the whole
#    config, and the queued runs see stale values), so its applies use
#    -target='module.team["X"]': the best case for terraform. After every run
#    the final state must hold all K new gens, or the bench fails. Writes
#    $OUT_DIR/apply_throughput.csv and, with PLOT=1, apply_throughput.png.
# 3. aws on moto (fixtures/tf/aws_teams, 30 resources in 4 groups sharing a
#    VPC): applied once with terraform, pushed into stategraph, then the plan
#    of a change to one group: wall time and moto API requests of
#    `terraform plan` vs `stategraph plan`, and where stategraph's time goes
#    (every terraform command it runs is timed through a wrapper). With
#    LATENCY_MS=D (D > 0) every command runs twice per repetition: straight to
#    moto, and through benches/latency_proxy.py, which holds each API request
#    D ms (moto answers in ~1 ms; a real API takes tens of ms). A sequential
#    check (terraform plan -parallelism=1 at 0 and D ms) compares the added
#    wall time with requests x D.
# 4. Wrapper overhead on 5 terraform_data instances (teams=1 per_team=3):
#    terraform plan vs stategraph plan, terraform apply vs stategraph apply of
#    a one-team replacement, OVERHEAD_REPS times, alternating.
#
# The report goes to $OUT_DIR/plan_apply.md as well.
#
# stategraph runs terraform through a small wrapper (STATEGRAPH_TERRAFORM)
# that logs each terraform subcommand's wall time, for the breakdown rows.
#
# Environment:
#   REPS=3                repetitions (sections 1 and 2)
#   TEAMS=20 PER_TEAM=49  section 1 state: 1 + TEAMS*(1+PER_TEAM) instances
#   KS="1 3"              concurrency levels of section 2 (e.g. KS="1 3 6")
#   TF_BACKEND=pg         terraform's shared state in section 2: pg | local
#   APPLY_TEAMS=10 APPLY_PER_TEAM=20   section 2 state (211 instances)
#   SLEEP=5               seconds each base replacement sleeps in section 2
#   AWS=1                 0 skips section 3
#   AWS_REPS=$REPS        repetitions of section 3
#   LATENCY_MS=0          section 3: also run every command with this added per-request latency
#   OVERHEAD_REPS=7       repetitions of section 4
#   SECTIONS="1 2 3 4"    which sections to run
#   OUT_DIR=benches/results   where plan_apply.md, apply_throughput.{csv,png} and overhead.csv go
#   PLOT=1                0 skips benches/plot.py
#   STATEGRAPH_BIN        use this binary instead of `cargo build --release`
#                         (which builds into $CARGO_TARGET_DIR when that is set)
#   STATEGRAPH_TERRAFORM  terraform binary (default: terraform on PATH)
#   STATEGRAPH_PG_BIN     directory holding initdb/pg_ctl/postgres
#   STATEGRAPH_TF_PLUGIN_MIRROR   provider mirror holding hashicorp/aws
#   STATEGRAPH_PYTHON     python with moto[server] (default python3)
#   KEEP_WORK=1           keep the work dir (configs, states, logs)
#   PG_DURABLE=on         fsync etc. of the bench cluster ("off": no flushes)
#
# Usage: benches/plan_apply.sh   (needs python3, terraform, PostgreSQL server
#                                 binaries, GNU time; moto for section 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
TEAMS=${TEAMS:-20}
PER_TEAM=${PER_TEAM:-49}
KS=${KS:-"1 3"}
APPLY_TEAMS=${APPLY_TEAMS:-10}
APPLY_PER_TEAM=${APPLY_PER_TEAM:-20}
SLEEP=${SLEEP:-5}
AWS=${AWS:-1}
AWS_REPS=${AWS_REPS:-$REPS}
SECTIONS=${SECTIONS:-"1 2 3 4"}
[[ $AWS == 1 ]] || SECTIONS=${SECTIONS//3/}
LATENCY_MS=${LATENCY_MS:-0}
TF_BACKEND=${TF_BACKEND:-pg}
[[ $TF_BACKEND == pg || $TF_BACKEND == local ]] || { echo "TF_BACKEND must be pg or local" >&2; exit 1; }
OVERHEAD_REPS=${OVERHEAD_REPS:-7}
OUT_DIR=$(realpath -m "${OUT_DIR:-$ROOT/benches/results}")
PLOT=${PLOT:-1}
TIME_BIN=/usr/bin/time
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(REPS|TEAMS|PER_TEAM|KS|APPLY_TEAMS|APPLY_PER_TEAM|SLEEP|AWS|AWS_REPS|SECTIONS|LATENCY_MS|TF_BACKEND|OVERHEAD_REPS|STATEGRAPH_BIN|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
BENCH_START=$(date +%s)

say() { printf 'plan_apply.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools

command -v python3 >/dev/null || die "python3 not found"
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e %M' true 2>/dev/null ||
    die "GNU time not found at $TIME_BIN; install it (apt-get install time)"

TERRAFORM=${STATEGRAPH_TERRAFORM:-terraform}
command -v "$TERRAFORM" >/dev/null ||
    die "terraform not found on PATH; install terraform >= 1.5 or set STATEGRAPH_TERRAFORM"
TERRAFORM=$(command -v "$TERRAFORM")

# ---------------------------------------------------------------- work dir and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench-pa.XXXXXX")

cleanup() {
    local rc=$?
    # Background applies of an interrupted section 2.
    local p
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    stop_moto
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

# ---------------------------------------------------------------- measuring

# run_timed RESULT_FILE LOG CMD...: runs CMD once under GNU time, appending
# "wall cpu rss_kib" to RESULT_FILE; fails the bench if CMD fails.
run_timed() {
    local res=$1 log=$2
    shift 2
    if ! $TIME_BIN -f '%e %U %S %M' -o "$WORK/time.one" "$@" >"$log" 2>&1; then
        say "failed: $*"
        tail -n 40 "$log" >&2
        exit 1
    fi
    tail -n1 "$WORK/time.one" | awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' >>"$res"
}

sg() { "$STATEGRAPH_BIN" "$@"; }

# ---------------------------------------------------------------- setup

if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    say "building stategraph (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin stategraph) ||
        die "cargo build --release failed"
    STATEGRAPH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stategraph"
fi
[[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
start_postgres
export STATEGRAPH_DATABASE_URL=$PG_URL
make_tf_wrapper "$TERRAFORM"
export STATEGRAPH_TERRAFORM="$WORK/tf-wrapper"

: >"$WORK/builtin.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/builtin.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0 CI=true
export STATEGRAPH_DATA_DIR="$WORK/sg-data"
unset TF_DATA_DIR TF_WORKSPACE TF_CLI_ARGS STATEGRAPH_STATE TF_LOG
TF_VERSION=$("$TERRAFORM" version -json | python3 -c 'import json, sys; print(json.load(sys.stdin)["terraform_version"])' || echo '?')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

OUT="$WORK/report.md"
{
    echo "# stategraph vs terraform: plan and apply"
    echo
    echo "- command: \`${ENVLINE}${CMDLINE}\`"
    echo "- machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- terraform $TF_VERSION; $PG_VERSION (PG_DURABLE=$PG_DURABLE); $("$STATEGRAPH_BIN" --version 2>/dev/null || echo "$STATEGRAPH_BIN")"
    echo "- medians over the repetitions; the tools alternate which goes first in each repetition"
    echo
} >"$OUT"
cat "$OUT"

# copy_teams DIR: a private copy of the teams config
copy_fixture() {
    mkdir -p "$2"
    cp -r "$ROOT/fixtures/tf/$1/." "$2/"
}

# ================================================================ section 1

section1() {
    local size=(-var "teams=$TEAMS" -var "per_team=$PER_TEAM")
    local n=$((1 + TEAMS * (1 + PER_TEAM)))
    local d="$WORK/s1"
    say "section 1: building the $n-instance teams state with terraform alone (slow: quadratic local backend)"
    copy_fixture teams "$d/build"
    (cd "$d/build" && "$TERRAFORM" init -input=false -no-color >/dev/null)
    local t0 t1
    t0=$(now)
    (cd "$d/build" && "$TERRAFORM" apply -auto-approve -input=false -no-color "${size[@]}" >"$d/build.log" 2>&1) ||
        { tail -n 30 "$d/build.log" >&2; die "initial apply failed"; }
    t1=$(now)
    local build_s
    build_s=$(elapsed "$t0" "$t1")
    say "  built in ${build_s}s; pushing into stategraph --state bench"
    t0=$(now)
    sg --state bench state push "$d/build/terraform.tfstate" >"$d/push.log" 2>&1 ||
        { cat "$d/push.log" >&2; die "state push failed"; }
    t1=$(now)
    local push_s
    push_s=$(elapsed "$t0" "$t1")

    copy_fixture teams "$d/tf"
    cp "$d/build/terraform.tfstate" "$d/tf/terraform.tfstate"
    (cd "$d/tf" && "$TERRAFORM" init -input=false -no-color >/dev/null)
    copy_fixture teams "$d/sg"
    mkdir -p "$d/sglogs"

    local change=(-var 'gen={c="2"}')
    local rep
    : >"$d/tf.res"; : >"$d/tfnr.res"; : >"$d/sg.res"
    for ((rep = 1; rep <= REPS; rep++)); do
        local order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        local who
        for who in $order; do
            if [[ $who == tf ]]; then
                (cd "$d/tf" && run_timed "$d/tf.res" "$d/tf.log" "$TERRAFORM" plan -input=false -no-color "${size[@]}" "${change[@]}")
                grep -q 'to destroy' "$d/tf.log" ||
                    { tail -n 20 "$d/tf.log" >&2; die "terraform plan did not plan the team c replacement"; }
                (cd "$d/tf" && run_timed "$d/tfnr.res" "$d/tfnr.log" "$TERRAFORM" plan -refresh=false -input=false -no-color "${size[@]}" "${change[@]}")
            else
                (cd "$d/sg" && SG_TF_LOG="$d/sglogs/$rep.tflog" run_timed "$d/sg.res" "$d/sg.log" \
                    "$STATEGRAPH_BIN" --state bench plan -no-color "${size[@]}" "${change[@]}")
                grep -q 'to destroy' "$d/sg.log" ||
                    { tail -n 20 "$d/sg.log" >&2; die "stategraph plan did not plan the team c replacement"; }
            fi
        done
        say "  rep $rep: terraform $(tail -n1 "$d/tf.res" | cut -d' ' -f1)s, -refresh=false $(tail -n1 "$d/tfnr.res" | cut -d' ' -f1)s, stategraph $(tail -n1 "$d/sg.res" | cut -d' ' -f1)s"
    done
    local tf_refreshed sg_refreshed
    tf_refreshed=$(grep -c 'Refreshing state' "$d/tf.log" || true)
    sg_refreshed=$(grep -c 'Refreshing state' "$d/sg.log" || true)
    local tfw sgw
    tfw=$(col "$d/tf.res" 1); sgw=$(col "$d/sg.res" 1)
    {
        echo "## 1. Plan of a one-team change, teams=$TEAMS per_team=$PER_TEAM ($n instances)"
        echo
        echo "State built once with terraform alone: ${build_s}s (one apply, local backend); \`stategraph state push\`: ${push_s}s."
        echo
        echo "| command | wall (s) | CPU user+sys (s) | peak RSS (MiB) | instances refreshed |"
        echo "|---|---:|---:|---:|---:|"
        echo "| terraform plan (full refresh) | $tfw | $(col "$d/tf.res" 2) | $(mib "$(col "$d/tf.res" 3)") | $tf_refreshed |"
        echo "| terraform plan -refresh=false | $(col "$d/tfnr.res" 1) | $(col "$d/tfnr.res" 2) | $(mib "$(col "$d/tfnr.res" 3)") | 0 |"
        echo "| stategraph plan | $sgw | $(col "$d/sg.res" 2) | $(mib "$(col "$d/sg.res" 3)") | $sg_refreshed |"
        echo
        echo "- ratio stategraph / terraform plan: wall **$(ratio "$sgw" "$tfw")**, CPU $(ratio "$(col "$d/sg.res" 2)" "$(col "$d/tf.res" 2)")"
        echo "- ratio stategraph / terraform plan -refresh=false: wall $(ratio "$sgw" "$(col "$d/tfnr.res" 1)")"
        echo "- terraform commands inside one stategraph plan (medians): $(tf_breakdown "$d/sglogs")"
        echo "- CPU includes child processes; peak RSS is the largest single process (terraform's, for both tools)"
        echo
    } | tee -a "$OUT"
}

# ================================================================ section 2

# base_gens STATEFILE TEAM...: prints "team=gen" for each team's base
base_gens() {
    python3 - "$@" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
want = sys.argv[2:]
got = {}
for r in st["resources"]:
    if r.get("module", "").startswith("module.team[") and r["type"] == "terraform_data" and r["name"] == "base":
        team = r["module"].split('"')[1]
        inp = r["instances"][0]["attributes"]["input"]
        got[team] = (inp.get("value", inp) or {}).get("gen", "?")
print(" ".join(f"{t}={got.get(t, '?')}" for t in want))
EOF
}

section2() {
    local size=(-var "teams=$APPLY_TEAMS" -var "per_team=$APPLY_PER_TEAM")
    local n=$((1 + APPLY_TEAMS * (1 + APPLY_PER_TEAM)))
    local d="$WORK/s2"
    local kmax=0 k
    for k in $KS; do ((k > kmax)) && kmax=$k; done
    ((kmax <= APPLY_TEAMS && kmax <= 26)) || die "K=$kmax needs at least $kmax teams (APPLY_TEAMS=$APPLY_TEAMS, at most 26)"
    local letters=abcdefghijklmnopqrstuvwxyz
    local teams=() i
    for ((i = 0; i < kmax; i++)); do teams+=("${letters:i:1}"); done

    say "section 2: $n-instance state, K in {$KS}, $SLEEP s per base replacement"
    copy_fixture teams "$d/build"
    (cd "$d/build" && "$TERRAFORM" init -input=false -no-color >/dev/null &&
        "$TERRAFORM" apply -auto-approve -input=false -no-color "${size[@]}" >"$d/build.log" 2>&1) ||
        { tail -n 30 "$d/build.log" >&2; die "initial apply failed"; }
    sg --state apply state push "$d/build/terraform.tfstate" >"$d/push.log" 2>&1 ||
        { cat "$d/push.log" >&2; die "state push failed"; }
    # terraform's one shared state: the pg backend in the bench's PostgreSQL
    # (database tfstate; one advisory lock for the workspace), or one local
    # file passed with -state.
    local tfstate=()
    local conn="postgres://postgres@127.0.0.1:$PG_PORT/tfstate?sslmode=disable"
    if [[ $TF_BACKEND == pg ]]; then
        as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres tfstate || die "createdb tfstate failed"
    else
        cp "$d/build/terraform.tfstate" "$d/shared.tfstate"
        tfstate=(-state="$d/shared.tfstate")
    fi
    for ((i = 0; i < kmax; i++)); do
        copy_fixture teams "$d/tf$i"
        [[ $TF_BACKEND == pg ]] &&
            printf 'terraform {\n  backend "pg" {\n    conn_str = "%s"\n  }\n}\n' "$conn" >"$d/tf$i/backend_pg.tf"
        (cd "$d/tf$i" && "$TERRAFORM" init -input=false -no-color >"$d/init$i.log" 2>&1) ||
            { cat "$d/init$i.log" >&2; die "terraform init (backend $TF_BACKEND) failed"; }
        copy_fixture teams "$d/sg$i"
        # Initialized, as a user's checkout is (stategraph then skips init).
        (cd "$d/sg$i" && "$TERRAFORM" init -input=false -no-color >"$d/sginit$i.log" 2>&1) ||
            { cat "$d/sginit$i.log" >&2; die "terraform init of a stategraph checkout failed"; }
    done
    # One plan of the unchanged configuration after the push records the
    # discovery baseline (after a stategraph apply it is there already).
    (cd "$d/sg0" && sg --state apply plan -no-color "${size[@]}" >"$d/first-plan.log" 2>&1) ||
        { tail -n 30 "$d/first-plan.log" >&2; die "stategraph's first plan failed"; }
    if [[ $TF_BACKEND == pg ]]; then
        (cd "$d/tf0" && "$TERRAFORM" state push -no-color "$d/build/terraform.tfstate" >"$d/tfpush.log" 2>&1) ||
            { cat "$d/tfpush.log" >&2; die "terraform state push into the pg backend failed"; }
    fi
    mkdir -p "$d/logs"

    declare -A SGG TFG
    local t
    for t in "${teams[@]}"; do SGG[$t]=1; TFG[$t]=1; done

    local rep who order
    for ((rep = 1; rep <= REPS; rep++)); do
        order="sg tf"
        ((rep % 2 == 0)) && order="tf sg"
        for k in $KS; do
            local newgen="r${rep}k${k}"
            for who in $order; do
                local -n G=$([[ $who == sg ]] && echo SGG || echo TFG)
                local pids=() t0 t1
                t0=$(now)
                for ((i = 0; i < k; i++)); do
                    local team=${teams[i]} map="" u
                    for u in "${teams[@]}"; do
                        local g=${G[$u]}
                        [[ $u == "$team" ]] && g=$newgen
                        map+="${map:+,}$u=\"$g\""
                    done
                    local log="$d/logs/$who-r$rep-k$k-$i.log"
                    if [[ $who == sg ]]; then
                        (cd "$d/sg$i" && SG_TF_LOG="$d/logs/$who-r$rep-k$k-$i.tflog" \
                            $TIME_BIN -f '%e %U %S %M' -o "$log.time" \
                            "$STATEGRAPH_BIN" --state apply apply -auto-approve -no-color \
                            "${size[@]}" -var "sleep_seconds=$SLEEP" -var "gen={$map}") >"$log" 2>&1 &
                    else
                        (cd "$d/tf$i" && $TIME_BIN -f '%e %U %S %M' -o "$log.time" \
                            "$TERRAFORM" apply -auto-approve -input=false -no-color \
                            "${tfstate[@]}" -lock-timeout=300s \
                            -target="module.team[\"$team\"]" \
                            "${size[@]}" -var "sleep_seconds=$SLEEP" -var "gen={$map}") >"$log" 2>&1 &
                    fi
                    pids+=($!)
                done
                local failed=0 p
                for p in "${pids[@]}"; do wait "$p" || failed=1; done
                t1=$(now)
                if ((failed)); then
                    for ((i = 0; i < k; i++)); do tail -n 15 "$d/logs/$who-r$rep-k$k-$i.log" >&2; done
                    die "$who: one of the K=$k applies of rep $rep failed"
                fi
                for ((i = 0; i < k; i++)); do G[${teams[i]}]=$newgen; done
                # Verify: every team's base carries the gen its checkout applied.
                local final
                if [[ $who == sg ]]; then
                    sg --state apply state pull >"$d/pulled.json" 2>"$d/pull.log" ||
                        { cat "$d/pull.log" >&2; die "state pull failed"; }
                    final="$d/pulled.json"
                elif [[ $TF_BACKEND == pg ]]; then
                    (cd "$d/tf0" && "$TERRAFORM" state pull >"$d/tfpulled.json" 2>"$d/pull.log") ||
                        { cat "$d/pull.log" >&2; die "terraform state pull (pg backend) failed"; }
                    final="$d/tfpulled.json"
                else
                    final="$d/shared.tfstate"
                fi
                local want="" got
                for t in "${teams[@]}"; do want+="${want:+ }$t=${G[$t]}"; done
                got=$(base_gens "$final" "${teams[@]}")
                [[ $got == "$want" ]] ||
                    die "$who K=$k rep $rep: lost update: the final state has [$got], expected [$want]"
                local wall cpu
                wall=$(elapsed "$t0" "$t1")
                cpu=$(cat "$d"/logs/"$who-r$rep-k$k"-*.log.time | awk '{ s += $2 + $3 } END { printf "%.2f", s }')
                echo "$wall $cpu" >>"$d/$who-k$k.res"
                say "  rep $rep K=$k $who: ${wall}s (all $k changes in the final state)"
                unset -n G
            done
        done
    done

    local k1 tf1 sg1
    k1=$(awk '{ print $1 }' <<<"$KS")
    tf1=$(col "$d/tf-k$k1.res" 1); sg1=$(col "$d/sg-k$k1.res" 1)
    {
        echo "## 2. K concurrent disjoint applies, teams=$APPLY_TEAMS per_team=$APPLY_PER_TEAM ($n instances), sleep_seconds=$SLEEP"
        echo
        local shared="one shared state file (\`-state=FILE\`)"
        [[ $TF_BACKEND == pg ]] && shared="one shared state in terraform's \`pg\` backend (the bench's PostgreSQL, database \`tfstate\`: one advisory lock per workspace)"
        echo "stategraph: K checkouts, one stored state, started together. terraform: K checkouts, $shared, \`-lock-timeout=300s\` (they queue), each with \`-target='module.team[\"X\"]'\` (without it the queued full-config applies revert each other's changes). Every run verified: all K new gens in the final state."
        echo
        echo "| K | terraform wall (s) | stategraph wall (s) | stategraph / terraform | terraform wall(K)/wall($k1) | stategraph wall(K)/wall($k1) | terraform applies/min | stategraph applies/min | terraform CPU (s) | stategraph CPU (s) |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        echo "k,tf_wall_s,sg_wall_s,sg_over_tf,tf_ratio_to_k$k1,sg_ratio_to_k$k1,tf_applies_per_min,sg_applies_per_min,tf_backend,sleep_s,instances,reps" >"$WORK/apply_throughput.csv"
        for k in $KS; do
            local tw sw tpm spm
            tw=$(col "$d/tf-k$k.res" 1); sw=$(col "$d/sg-k$k.res" 1)
            tpm=$(awk -v k="$k" -v w="$tw" 'BEGIN { printf "%.1f", k * 60 / w }'); spm=$(awk -v k="$k" -v w="$sw" 'BEGIN { printf "%.1f", k * 60 / w }')
            echo "| $k | $tw | $sw | $(ratio "$sw" "$tw") | **$(ratio "$tw" "$tf1")** | **$(ratio "$sw" "$sg1")** | $tpm | $spm | $(col "$d/tf-k$k.res" 2) | $(col "$d/sg-k$k.res" 2) |"
            echo "$k,$tw,$sw,$(ratio "$sw" "$tw"),$(ratio "$tw" "$tf1"),$(ratio "$sw" "$sg1"),$tpm,$spm,$TF_BACKEND,$SLEEP,$n,$REPS" >>"$WORK/apply_throughput.csv"
        done
        echo
        echo "- goal: stategraph wall(K)/wall(1) <= 1.5; terraform is expected near K (serialized by the state lock)"
        for k in $KS; do
            mkdir -p "$d/bd-k$k"
            cp "$d"/logs/sg-*-k$k-*.tflog "$d/bd-k$k/" 2>/dev/null || true
            echo "- terraform commands inside one stategraph apply, K=$k (medians over applies): $(tf_breakdown "$d/bd-k$k")"
        done
        echo "- CPU: sum over the K processes (with their children); applies/min: K x 60 / wall"
        echo
    } | tee -a "$OUT"
    mkdir -p "$OUT_DIR"
    cp "$WORK/apply_throughput.csv" "$OUT_DIR/apply_throughput.csv"
    if [[ $PLOT == 1 ]]; then
        python3 "$ROOT/benches/plot.py" "$OUT_DIR/apply_throughput.csv" "$OUT_DIR/apply_throughput.png" >&2 ||
            say "plot.py failed (results are in $OUT_DIR/apply_throughput.csv)"
    fi
}

# ================================================================ section 3

section3() {
    local d="$WORK/s3"
    mkdir -p "$d"
    if ! write_mirror_tfrc "$WORK/mirror.tfrc"; then
        echo "## 3. aws on moto: SKIPPED (no terraform provider mirror with hashicorp/aws; set STATEGRAPH_TF_PLUGIN_MIRROR)" | tee -a "$OUT"
        return
    fi
    if ! start_moto; then
        echo "## 3. aws on moto: SKIPPED (moto's server did not start with ${STATEGRAPH_PYTHON:-python3}; pip install 'moto[server]')" | tee -a "$OUT"
        return
    fi
    local lats="0"
    if [[ $LATENCY_MS != 0 ]]; then
        start_latency_proxy "$LATENCY_MS" || die "the latency proxy did not start"
        lats="0 $LATENCY_MS"
    fi
    export TF_CLI_CONFIG_FILE="$WORK/mirror.tfrc"
    local w
    for w in build tf sg; do
        copy_fixture aws_teams "$d/$w"
        moto_provider_tf >"$d/$w/moto_provider.tf"
    done
    say "section 3: aws_teams on moto: init + apply with terraform alone"
    local t0 t1 r0 r1
    (cd "$d/build" && "$TERRAFORM" init -input=false -no-color >"$d/init.log" 2>&1) ||
        { cat "$d/init.log" >&2; die "terraform init (aws) failed"; }
    r0=$(moto_requests); t0=$(now)
    (cd "$d/build" && "$TERRAFORM" apply -auto-approve -input=false -no-color >"$d/build.log" 2>&1) ||
        { tail -n 30 "$d/build.log" >&2; die "aws apply failed"; }
    t1=$(now); r1=$(moto_requests)
    local nres build_s build_req
    nres=$("$TERRAFORM" state list -state="$d/build/terraform.tfstate" | wc -l)
    build_s=$(elapsed "$t0" "$t1"); build_req=$((r1 - r0))
    sg --state aws state push "$d/build/terraform.tfstate" >"$d/push.log" 2>&1 ||
        { cat "$d/push.log" >&2; die "state push (aws) failed"; }
    cp "$d/build/terraform.tfstate" "$d/tf/terraform.tfstate"
    # A real checkout carries the committed dependency lock file (stategraph
    # runs init with -lockfile=readonly).
    cp "$d/build/.terraform.lock.hcl" "$d/tf/"
    cp "$d/build/.terraform.lock.hcl" "$d/sg/"
    local tfinit
    t0=$(now)
    (cd "$d/tf" && "$TERRAFORM" init -input=false -no-color >/dev/null 2>&1) || die "terraform init (aws tf checkout) failed"
    t1=$(now); tfinit=$(elapsed "$t0" "$t1")
    mkdir -p "$d/sglogs"

    # endpoint_for LAT: moto itself without latency, the proxy with it.
    set_latency() {
        local ep="" w
        if [[ $1 != 0 ]]; then
            proxy_set_delay "$1"
            ep="http://127.0.0.1:$PROXY_PORT"
        fi
        for w in tf sg; do moto_provider_tf $ep >"$d/$w/moto_provider.tf"; done
    }
    # counted TAG CMD...: runs CMD; appends moto's request count (and the
    # proxy's, when the proxy is in use) to $d/TAG.req / TAG.preq.
    counted() {
        local tag=$1 m0 p0=0
        shift
        m0=$(moto_requests)
        [[ -n $PROXY_PID ]] && p0=$(proxy_requests)
        "$@"
        echo "$(($(moto_requests) - m0))" >>"$d/$tag.req"
        [[ -n $PROXY_PID ]] && echo "$(($(proxy_requests) - p0))" >>"$d/$tag.preq"
        return 0
    }

    local change=(-var 'gen={blue="2"}')
    local rep who order lat
    for ((rep = 1; rep <= AWS_REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        for lat in $lats; do
            set_latency "$lat"
            for who in $order; do
                if [[ $who == tf ]]; then
                    (cd "$d/tf" && counted "tf-$lat" run_timed "$d/tf-$lat.res" "$d/tf-$lat.log" "$TERRAFORM" plan -input=false -no-color "${change[@]}")
                    grep -q 'to change' "$d/tf-$lat.log" || { tail -n 20 "$d/tf-$lat.log" >&2; die "terraform plan (aws) planned no change"; }
                    (cd "$d/tf" && counted "tfnr-$lat" run_timed "$d/tfnr-$lat.res" "$d/tfnr-$lat.log" "$TERRAFORM" plan -refresh=false -input=false -no-color "${change[@]}")
                else
                    mkdir -p "$d/sglogs-$lat"
                    (cd "$d/sg" && SG_TF_LOG="$d/sglogs-$lat/$rep.tflog" counted "sg-$lat" run_timed "$d/sg-$lat.res" "$d/sg-$lat.log" \
                        "$STATEGRAPH_BIN" --state aws plan -no-color "${change[@]}")
                    grep -q 'to change' "$d/sg-$lat.log" || { tail -n 20 "$d/sg-$lat.log" >&2; die "stategraph plan (aws) planned no change"; }
                fi
            done
            say "  rep $rep, ${lat} ms: terraform $(tail -n1 "$d/tf-$lat.res" | cut -d' ' -f1)s/$(tail -n1 "$d/tf-$lat.req") req, -refresh=false $(tail -n1 "$d/tfnr-$lat.res" | cut -d' ' -f1)s, stategraph $(tail -n1 "$d/sg-$lat.res" | cut -d' ' -f1)s/$(tail -n1 "$d/sg-$lat.req") req"
        done
    done
    # Sequential check of the proxy: a full plan with -parallelism=1 with and
    # without latency; the added wall time should be about requests x delay.
    local seq_line=""
    if [[ $LATENCY_MS != 0 ]]; then
        local seqlats
        for ((rep = 1; rep <= AWS_REPS; rep++)); do
            seqlats="0 $LATENCY_MS"
            ((rep % 2 == 0)) && seqlats="$LATENCY_MS 0"
            for lat in $seqlats; do
                set_latency "$lat"
                (cd "$d/tf" && counted "seq-$lat" run_timed "$d/seq-$lat.res" "$d/seq-$lat.log" "$TERRAFORM" plan -parallelism=1 -input=false -no-color "${change[@]}")
            done
            say "  proxy check rep $rep: -parallelism=1 plan $(tail -n1 "$d/seq-0.res" | cut -d' ' -f1)s at 0 ms, $(tail -n1 "$d/seq-$LATENCY_MS.res" | cut -d' ' -f1)s at $LATENCY_MS ms"
        done
        local s0 sl q added expect
        s0=$(col "$d/seq-0.res" 1); sl=$(col "$d/seq-$LATENCY_MS.res" 1); q=$(median <"$d/seq-$LATENCY_MS.preq")
        added=$(awk -v a="$sl" -v b="$s0" 'BEGIN { printf "%.2f", a - b }')
        expect=$(awk -v q="$q" -v l="$LATENCY_MS" 'BEGIN { printf "%.2f", q * l / 1000 }')
        seq_line="- proxy check, \`terraform plan -parallelism=1\` (medians of $AWS_REPS, alternating): ${s0}s at 0 ms, ${sl}s at ${LATENCY_MS} ms: **${added}s added** for $q requests through the proxy (moto saw $(median <"$d/seq-$LATENCY_MS.req")) x ${LATENCY_MS} ms = **${expect}s expected** (ratio $(ratio "$added" "$expect")); single runs: 0 ms [$(awk '{ printf "%s ", $1 }' "$d/seq-0.res")], ${LATENCY_MS} ms [$(awk '{ printf "%s ", $1 }' "$d/seq-$LATENCY_MS.res")]"
    fi
    {
        echo "## 3. aws on moto: plan of a change to one of 4 groups ($nres resources)"
        echo
        echo "Applied once with terraform alone: ${build_s}s, $build_req API requests. \`terraform init\` of the terraform checkout (not in the plan rows): ${tfinit}s; stategraph's plan includes its own init."
        [[ $LATENCY_MS != 0 ]] && echo "Latency: \`LATENCY_MS=$LATENCY_MS\` runs every command once straight to moto (0 ms) and once through benches/latency_proxy.py, which holds each API request $LATENCY_MS ms before forwarding it (concurrent requests are delayed concurrently)."
        echo
        echo "| added latency | command | wall (s) | CPU user+sys (s) | peak RSS (MiB) | API requests (moto) | through the proxy | resources refreshed |"
        echo "|---:|---|---:|---:|---:|---:|---:|---:|"
        for lat in $lats; do
            local pq="-" pqnr="-" pqsg="-"
            if [[ $lat != 0 ]]; then pq=$(median <"$d/tf-$lat.preq"); pqnr=$(median <"$d/tfnr-$lat.preq"); pqsg=$(median <"$d/sg-$lat.preq"); fi
            echo "| $lat ms | terraform plan (full refresh) | $(col "$d/tf-$lat.res" 1) | $(col "$d/tf-$lat.res" 2) | $(mib "$(col "$d/tf-$lat.res" 3)") | $(median <"$d/tf-$lat.req") | $pq | $(grep -c 'Refreshing state' "$d/tf-$lat.log" || true) |"
            echo "| $lat ms | terraform plan -refresh=false | $(col "$d/tfnr-$lat.res" 1) | $(col "$d/tfnr-$lat.res" 2) | $(mib "$(col "$d/tfnr-$lat.res" 3)") | $(median <"$d/tfnr-$lat.req") | $pqnr | 0 |"
            echo "| $lat ms | stategraph plan | $(col "$d/sg-$lat.res" 1) | $(col "$d/sg-$lat.res" 2) | $(mib "$(col "$d/sg-$lat.res" 3)") | $(median <"$d/sg-$lat.req") | $pqsg | $(grep -c 'Refreshing state' "$d/sg-$lat.log" || true) |"
        done
        echo
        for lat in $lats; do
            local tfw sgw
            tfw=$(col "$d/tf-$lat.res" 1); sgw=$(col "$d/sg-$lat.res" 1)
            echo "- $lat ms: ratio stategraph / terraform plan: wall **$(ratio "$sgw" "$tfw")**, API requests $(ratio "$(median <"$d/sg-$lat.req")" "$(median <"$d/tf-$lat.req")")"
            echo "- $lat ms: terraform commands inside one stategraph plan (medians): $(tf_breakdown "$d/sglogs-$lat")"
            echo "- $lat ms: single runs (s): terraform plan [$(awk '{ printf "%s ", $1 }' "$d/tf-$lat.res")], -refresh=false [$(awk '{ printf "%s ", $1 }' "$d/tfnr-$lat.res")], stategraph plan [$(awk '{ printf "%s ", $1 }' "$d/sg-$lat.res")]"
        done
        if [[ $LATENCY_MS != 0 ]]; then
            echo "- wall added by ${LATENCY_MS} ms of latency: terraform plan +$(awk -v a="$(col "$d/tf-$LATENCY_MS.res" 1)" -v b="$(col "$d/tf-0.res" 1)" 'BEGIN { printf "%.2f", a - b }')s, stategraph plan +$(awk -v a="$(col "$d/sg-$LATENCY_MS.res" 1)" -v b="$(col "$d/sg-0.res" 1)" 'BEGIN { printf "%.2f", a - b }')s"
            echo "$seq_line"
        fi
        echo "- the aws provider costs several seconds per terraform command (start-up and schema), so a plan made of several terraform commands pays it several times"
        echo
    } | tee -a "$OUT"
}

# ================================================================ section 4

# Wrapper overhead on a tiny config: what stategraph adds to one plan and one
# apply when there is nothing to save (5 terraform_data instances).
section4() {
    local d="$WORK/s4"
    local size=(-var teams=1 -var per_team=3)
    export TF_CLI_CONFIG_FILE="$WORK/builtin.tfrc"
    say "section 4: wrapper overhead on 5 terraform_data instances, $OVERHEAD_REPS repetitions"
    copy_fixture teams "$d/tf"
    (cd "$d/tf" && "$TERRAFORM" init -input=false -no-color >/dev/null &&
        "$TERRAFORM" apply -auto-approve -input=false -no-color "${size[@]}" >"$d/build.log" 2>&1) ||
        { tail -n 30 "$d/build.log" >&2; die "section 4: initial apply failed"; }
    local n
    n=$("$TERRAFORM" state list -state="$d/tf/terraform.tfstate" | wc -l)
    sg --state tiny state push "$d/tf/terraform.tfstate" >"$d/push.log" 2>&1 ||
        { cat "$d/push.log" >&2; die "section 4: state push failed"; }
    copy_fixture teams "$d/sg"
    mkdir -p "$d/plan-logs" "$d/apply-logs"
    : >"$d/tfp.res"; : >"$d/sgp.res"; : >"$d/tfa.res"; : >"$d/sga.res"
    local rep who order
    for ((rep = 1; rep <= OVERHEAD_REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        local planned=(-var "gen={a=\"p$rep\"}") applied=(-var "gen={a=\"a$rep\"}")
        for who in $order; do
            if [[ $who == tf ]]; then
                (cd "$d/tf" && run_timed "$d/tfp.res" "$d/tfp.log" "$TERRAFORM" plan -input=false -no-color "${size[@]}" "${planned[@]}")
                (cd "$d/tf" && run_timed "$d/tfa.res" "$d/tfa.log" "$TERRAFORM" apply -auto-approve -input=false -no-color "${size[@]}" "${applied[@]}")
            else
                (cd "$d/sg" && SG_TF_LOG="$d/plan-logs/$rep.tflog" run_timed "$d/sgp.res" "$d/sgp.log" \
                    "$STATEGRAPH_BIN" --state tiny plan -no-color "${size[@]}" "${planned[@]}")
                (cd "$d/sg" && SG_TF_LOG="$d/apply-logs/$rep.tflog" run_timed "$d/sga.res" "$d/sga.log" \
                    "$STATEGRAPH_BIN" --state tiny apply -auto-approve -no-color "${size[@]}" "${applied[@]}")
            fi
        done
        # Both tools must plan and apply the same change (the team's base
        # replaced, its 3 services updated).
        local a b
        a=$(grep '^Plan: ' "$d/tfp.log" || true); b=$(grep '^Plan: ' "$d/sgp.log" || true)
        [[ $a == "Plan: 1 to add, 3 to change, 1 to destroy." && $a == "$b" ]] ||
            { tail -n 5 "$d/tfp.log" "$d/sgp.log" >&2; die "section 4: the plans differ or are not the team's replacement: [$a] [$b]"; }
        a=$(grep -o 'Apply complete! Resources: .*' "$d/tfa.log" || true); b=$(grep -o 'Apply complete! Resources: .*' "$d/sga.log" || true)
        [[ $a == "Apply complete! Resources: 1 added, 3 changed, 1 destroyed." && $a == "$b" ]] ||
            { tail -n 5 "$d/tfa.log" "$d/sga.log" >&2; die "section 4: the applies differ or are not the team's replacement: [$a] [$b]"; }
        say "  rep $rep: plan terraform $(tail -n1 "$d/tfp.res" | cut -d' ' -f1)s stategraph $(tail -n1 "$d/sgp.res" | cut -d' ' -f1)s; apply terraform $(tail -n1 "$d/tfa.res" | cut -d' ' -f1)s stategraph $(tail -n1 "$d/sga.res" | cut -d' ' -f1)s"
    done
    local tfp sgp tfa sga
    tfp=$(col "$d/tfp.res" 1); sgp=$(col "$d/sgp.res" 1); tfa=$(col "$d/tfa.res" 1); sga=$(col "$d/sga.res" 1)
    {
        echo "## 4. Wrapper overhead: $n terraform_data instances (teams=1 per_team=3)"
        echo
        echo "Each repetition plans one change (\`-var gen={a=\"pN\"}\`: the team's base replaced, its 3 services updated) and applies another (\`gen={a=\"aN\"}\`), terraform on its local state file, stategraph on its stored state; the tools alternate which goes first. Medians of $OVERHEAD_REPS."
        echo
        echo "| command | terraform wall (s) | stategraph wall (s) | stategraph - terraform (s) | stategraph / terraform | CPU terraform (s) | CPU stategraph (s) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        echo "| plan | $tfp | $sgp | $(awk -v a="$sgp" -v b="$tfp" 'BEGIN { printf "%.2f", a - b }') | **$(ratio "$sgp" "$tfp")** | $(col "$d/tfp.res" 2) | $(col "$d/sgp.res" 2) |"
        echo "| apply | $tfa | $sga | $(awk -v a="$sga" -v b="$tfa" 'BEGIN { printf "%.2f", a - b }') | **$(ratio "$sga" "$tfa")** | $(col "$d/tfa.res" 2) | $(col "$d/sga.res" 2) |"
        echo
        echo "- terraform commands inside one stategraph plan (medians): $(tf_breakdown "$d/plan-logs")"
        echo "- terraform commands inside one stategraph apply (medians): $(tf_breakdown "$d/apply-logs")"
        echo
    } | tee -a "$OUT"
    {
        echo "command,instances,tf_wall_s,sg_wall_s,sg_minus_tf_s,sg_over_tf,tf_cpu_s,sg_cpu_s,reps"
        echo "plan,$n,$tfp,$sgp,$(awk -v a="$sgp" -v b="$tfp" 'BEGIN { printf "%.2f", a - b }'),$(ratio "$sgp" "$tfp"),$(col "$d/tfp.res" 2),$(col "$d/sgp.res" 2),$OVERHEAD_REPS"
        echo "apply,$n,$tfa,$sga,$(awk -v a="$sga" -v b="$tfa" 'BEGIN { printf "%.2f", a - b }'),$(ratio "$sga" "$tfa"),$(col "$d/tfa.res" 2),$(col "$d/sga.res" 2),$OVERHEAD_REPS"
    } >"$WORK/overhead.csv"
    mkdir -p "$OUT_DIR"
    cp "$WORK/overhead.csv" "$OUT_DIR/overhead.csv"
}

has_section 1 && section1
has_section 2 && section2
if has_section 3; then
    section3
elif [[ $AWS != 1 ]]; then
    echo "## 3. aws on moto: skipped (AWS=0)" | tee -a "$OUT"
fi
has_section 4 && section4

echo "Total bench time: $(($(date +%s) - BENCH_START)) s (including setup and state builds); load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
mkdir -p "$OUT_DIR"
cp "$OUT" "$OUT_DIR/plan_apply.md"
say "report: $OUT_DIR/plan_apply.md"

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
#    started together. terraform: K checkouts sharing ONE state file
#    (-state=FILE -lock-timeout=300s, so they queue). Each checkout passes the
#    full gen map as it was when the repetition started, plus its own change
#    (an up-to-date checkout of the repository). terraform alone would revert
#    the other checkouts' changes with such a map (it applies the whole
#    config, and the queued runs see stale values), so its applies use
#    -target='module.team["X"]': the best case for terraform. After every run
#    the final state must hold all K new gens, or the bench fails.
# 3. aws on moto (fixtures/tf/aws_teams, 30 resources in 4 groups sharing a
#    VPC): applied once with terraform, pushed into stategraph, then the plan
#    of a change to one group: wall time and moto API requests of
#    `terraform plan` vs `stategraph plan`, and where stategraph's time goes
#    (every terraform command it runs is timed through a wrapper).
#
# stategraph runs terraform through a small wrapper (STATEGRAPH_TERRAFORM)
# that logs each terraform subcommand's wall time, for the breakdown rows.
#
# Environment:
#   REPS=3                repetitions (sections 1 and 2)
#   TEAMS=20 PER_TEAM=49  section 1 state: 1 + TEAMS*(1+PER_TEAM) instances
#   KS="1 3"              concurrency levels of section 2
#   APPLY_TEAMS=10 APPLY_PER_TEAM=20   section 2 state (211 instances)
#   SLEEP=5               seconds each base replacement sleeps in section 2
#   AWS=1                 0 skips section 3
#   AWS_REPS=$REPS        repetitions of section 3
#   SECTIONS="1 2 3"      which sections to run
#   STATEGRAPH_BIN        use this binary instead of `cargo build --release`
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
SECTIONS=${SECTIONS:-"1 2 3"}
[[ $AWS == 1 ]] || SECTIONS=${SECTIONS//3/}
TIME_BIN=/usr/bin/time
CMDLINE="$0${*:+ $*}"
ENVLINE=$(env | grep -E '^(REPS|TEAMS|PER_TEAM|KS|APPLY_TEAMS|APPLY_PER_TEAM|SLEEP|AWS|AWS_REPS|SECTIONS|STATEGRAPH_BIN|PG_DURABLE)=' | sort | tr '\n' ' ' || true)
BENCH_START=$(date +%s)

say() { printf 'plan_apply.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools

command -v python3 >/dev/null || die "python3 not found"
[[ -x $TIME_BIN ]] && $TIME_BIN -f '%e %M' true 2>/dev/null ||
    die "GNU time not found at $TIME_BIN; install it (apt-get install time)"

TERRAFORM=${STATEGRAPH_TERRAFORM:-terraform}
command -v "$TERRAFORM" >/dev/null ||
    die "terraform not found on PATH; install terraform >= 1.5 or set STATEGRAPH_TERRAFORM"
TERRAFORM=$(command -v "$TERRAFORM")
PYTHON=${STATEGRAPH_PYTHON:-python3}


find_mirror() {
    local d
    for d in "${STATEGRAPH_TF_PLUGIN_MIRROR:-}" /opt/tf-plugins /usr/share/terraform/plugins /usr/local/share/terraform/plugins; do
        [[ -n $d && -d $d/registry.terraform.io ]] && { echo "$d"; return 0; }
    done
    return 1
}

# ---------------------------------------------------------------- work dir and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench-pa.XXXXXX")
MOTO_PID=""


cleanup() {
    local rc=$?
    # Background applies of an interrupted section 2.
    local p
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    if [[ -n $MOTO_PID ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
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



# ---------------------------------------------------------------- moto

start_moto() {
    "$PYTHON" -c 'import moto.server, flask, flask_cors' 2>/dev/null || return 1
    MOTO_PORT=$(free_port)
    MOTO_LOG="$WORK/moto.log"
    "$PYTHON" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$MOTO_PID" 2>/dev/null || { cat "$MOTO_LOG" >&2; return 1; }
        if python3 - "$MOTO_PORT" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
EOF
            say "moto $("$PYTHON" -c 'import moto; print(moto.__version__)') on 127.0.0.1:$MOTO_PORT"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# AWS API requests moto served so far (its own /moto-api/ calls excluded),
# as tests/common/moto.rs counts them.
moto_requests() {
    grep -F '" ' "$MOTO_LOG" | grep -F ' HTTP/' | grep -vcF '/moto-api/' || true
}

moto_provider_tf() {
    local ep="http://127.0.0.1:$MOTO_PORT"
    cat <<EOF
# Written by benches/plan_apply.sh: the local moto server, dummy credentials.
provider "aws" {
  access_key                  = "test"
  secret_key                  = "test"
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {
    ec2 = "$ep"
    s3  = "$ep"
    iam = "$ep"
    sts = "$ep"
  }
}
EOF
}

# ---------------------------------------------------------------- measuring

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "?" || b == "?") print "?"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

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

# col FILE N: median of column N
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
mib() { awk -v k="$1" 'BEGIN { if (k == "?") print "?"; else printf "%.0f", k / 1024 }'; }

# The terraform wrapper stategraph runs: logs "SUBCOMMAND WALL" per call.
make_tf_wrapper() {
    cat >"$WORK/tf-wrapper" <<EOF
#!/usr/bin/env bash
start=\$(date +%s.%N)
"$TERRAFORM" "\$@"
rc=\$?
end=\$(date +%s.%N)
if [[ -n \${SG_TF_LOG:-} ]]; then
    sub=""
    for a in "\$@"; do [[ \$a == -* ]] || { sub=\$a; break; }; done
    awk -v s="\${sub:-?}" -v a="\$start" -v b="\$end" 'BEGIN { printf "%s %.2f\n", s, b - a }' >>"\$SG_TF_LOG"
fi
exit \$rc
EOF
    chmod +x "$WORK/tf-wrapper"
}

sg() { "$STATEGRAPH_BIN" "$@"; }

# tf_breakdown LOGDIR: the terraform calls of one stategraph run, in order,
# with median wall times over the per-run logs LOGDIR/*.tflog, e.g.
# "init 1.07s, plan 8.90s, show 2.53s, plan 9.05s (terraform total 21.6s)".
tf_breakdown() {
    python3 - "$1" <<'EOF'
import glob, statistics, sys
runs = []
for p in sorted(glob.glob(sys.argv[1] + "/*.tflog")):
    runs.append([(l.split()[0], float(l.split()[1])) for l in open(p) if l.strip()])
if not runs:
    print("?"); sys.exit()
seqs = {tuple(s for s, _ in r) for r in runs}
tot = statistics.median(sum(t for _, t in r) for r in runs)
if len(seqs) == 1:
    seq = next(iter(seqs))
    parts = [f"{s} {statistics.median(r[i][1] for r in runs):.2f}s" for i, s in enumerate(seq)]
else:  # runs differ: per-subcommand totals
    subs = sorted({s for r in runs for s, _ in r})
    parts = [f"{s} {statistics.median(sum(t for x, t in r if x == s) for r in runs):.2f}s total" for s in subs]
print(", ".join(parts) + f" (terraform total {tot:.2f}s)")
EOF
}

# ---------------------------------------------------------------- setup

if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    say "building stategraph (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin stategraph) ||
        die "cargo build --release failed"
    STATEGRAPH_BIN="$ROOT/target/release/stategraph"
fi
[[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
start_postgres
export STATEGRAPH_DATABASE_URL=$PG_URL
make_tf_wrapper
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
    echo "- terraform $TF_VERSION; $PG_VERSION (PG_DURABLE=$PG_DURABLE); stategraph $("$STATEGRAPH_BIN" --version 2>/dev/null || echo "$STATEGRAPH_BIN")"
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
    cp "$d/build/terraform.tfstate" "$d/shared.tfstate"
    sg --state apply state push "$d/build/terraform.tfstate" >"$d/push.log" 2>&1 ||
        { cat "$d/push.log" >&2; die "state push failed"; }
    for ((i = 0; i < kmax; i++)); do
        copy_fixture teams "$d/tf$i"
        (cd "$d/tf$i" && "$TERRAFORM" init -input=false -no-color >/dev/null)
        copy_fixture teams "$d/sg$i"
    done
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
                            -state="$d/shared.tfstate" -lock-timeout=300s \
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
        echo "stategraph: K checkouts, one stored state, started together. terraform: K checkouts, one shared state file, \`-lock-timeout=300s\` (they queue), each with \`-target='module.team[\"X\"]'\` (without it the queued full-config applies revert each other's changes). Every run verified: all K new gens in the final state."
        echo
        echo "| K | terraform wall (s) | stategraph wall (s) | stategraph / terraform | terraform wall(K)/wall($k1) | stategraph wall(K)/wall($k1) | terraform CPU (s) | stategraph CPU (s) |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
        for k in $KS; do
            local tw sw
            tw=$(col "$d/tf-k$k.res" 1); sw=$(col "$d/sg-k$k.res" 1)
            echo "| $k | $tw | $sw | $(ratio "$sw" "$tw") | **$(ratio "$tw" "$tf1")** | **$(ratio "$sw" "$sg1")** | $(col "$d/tf-k$k.res" 2) | $(col "$d/sg-k$k.res" 2) |"
        done
        echo
        echo "- goal: stategraph wall(K)/wall(1) <= 1.5; terraform is expected near K (serialized by the state lock)"
        for k in $KS; do
            mkdir -p "$d/bd-k$k"
            cp "$d"/logs/sg-*-k$k-*.tflog "$d/bd-k$k/" 2>/dev/null || true
            echo "- terraform commands inside one stategraph apply, K=$k (medians over applies): $(tf_breakdown "$d/bd-k$k")"
        done
        echo "- CPU: sum over the K processes (with their children)"
        echo
    } | tee -a "$OUT"
}

# ================================================================ section 3

section3() {
    local d="$WORK/s3"
    mkdir -p "$d"
    local mirror
    if ! mirror=$(find_mirror); then
        echo "## 3. aws on moto: SKIPPED (no terraform provider mirror with hashicorp/aws; set STATEGRAPH_TF_PLUGIN_MIRROR)" | tee -a "$OUT"
        return
    fi
    if ! start_moto; then
        echo "## 3. aws on moto: SKIPPED (moto's server did not start with $PYTHON; pip install 'moto[server]')" | tee -a "$OUT"
        return
    fi
    cat >"$WORK/mirror.tfrc" <<EOF
disable_checkpoint = true

provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
EOF
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

    local change=(-var 'gen={blue="2"}')
    local rep who order
    : >"$d/tf.res"; : >"$d/tfnr.res"; : >"$d/sg.res"
    for ((rep = 1; rep <= AWS_REPS; rep++)); do
        order="tf sg"
        ((rep % 2 == 0)) && order="sg tf"
        for who in $order; do
            r0=$(moto_requests)
            if [[ $who == tf ]]; then
                (cd "$d/tf" && run_timed "$d/tf.res" "$d/tf.log" "$TERRAFORM" plan -input=false -no-color "${change[@]}")
                r1=$(moto_requests); echo "$((r1 - r0))" >>"$d/tf.req"
                grep -q 'to change' "$d/tf.log" || { tail -n 20 "$d/tf.log" >&2; die "terraform plan (aws) planned no change"; }
                r0=$(moto_requests)
                (cd "$d/tf" && run_timed "$d/tfnr.res" "$d/tfnr.log" "$TERRAFORM" plan -refresh=false -input=false -no-color "${change[@]}")
                r1=$(moto_requests); echo "$((r1 - r0))" >>"$d/tfnr.req"
            else
                (cd "$d/sg" && SG_TF_LOG="$d/sglogs/$rep.tflog" run_timed "$d/sg.res" "$d/sg.log" \
                    "$STATEGRAPH_BIN" --state aws plan -no-color "${change[@]}")
                r1=$(moto_requests); echo "$((r1 - r0))" >>"$d/sg.req"
                grep -q 'to change' "$d/sg.log" || { tail -n 20 "$d/sg.log" >&2; die "stategraph plan (aws) planned no change"; }
            fi
        done
        say "  rep $rep: terraform $(tail -n1 "$d/tf.res" | cut -d' ' -f1)s/$(tail -n1 "$d/tf.req") req, -refresh=false $(tail -n1 "$d/tfnr.res" | cut -d' ' -f1)s, stategraph $(tail -n1 "$d/sg.res" | cut -d' ' -f1)s/$(tail -n1 "$d/sg.req") req"
    done
    local tfw sgw tfq sgq
    tfw=$(col "$d/tf.res" 1); sgw=$(col "$d/sg.res" 1)
    tfq=$(median <"$d/tf.req"); sgq=$(median <"$d/sg.req")
    {
        echo "## 3. aws on moto: plan of a change to one of 4 groups ($nres resources)"
        echo
        echo "Applied once with terraform alone: ${build_s}s, $build_req API requests. \`terraform init\` of the terraform checkout (not in the plan rows): ${tfinit}s; stategraph's plan includes its own init."
        echo
        echo "| command | wall (s) | CPU user+sys (s) | peak RSS (MiB) | moto API requests | resources refreshed |"
        echo "|---|---:|---:|---:|---:|---:|"
        echo "| terraform plan (full refresh) | $tfw | $(col "$d/tf.res" 2) | $(mib "$(col "$d/tf.res" 3)") | $tfq | $(grep -c 'Refreshing state' "$d/tf.log" || true) |"
        echo "| terraform plan -refresh=false | $(col "$d/tfnr.res" 1) | $(col "$d/tfnr.res" 2) | $(mib "$(col "$d/tfnr.res" 3)") | $(median <"$d/tfnr.req") | 0 |"
        echo "| stategraph plan | $sgw | $(col "$d/sg.res" 2) | $(mib "$(col "$d/sg.res" 3)") | $sgq | $(grep -c 'Refreshing state' "$d/sg.log" || true) |"
        echo
        echo "- ratio stategraph / terraform plan: wall **$(ratio "$sgw" "$tfw")**, API requests $(ratio "$sgq" "$tfq")"
        echo "- terraform commands inside one stategraph plan (medians): $(tf_breakdown "$d/sglogs")"
        echo "- the aws provider costs several seconds per terraform command (start-up and schema), so a plan made of several terraform commands pays it several times"
        echo
    } | tee -a "$OUT"
}

has_section 1 && section1
has_section 2 && section2
if has_section 3; then
    section3
elif [[ $AWS != 1 ]]; then
    echo "## 3. aws on moto: skipped (AWS=0)" | tee -a "$OUT"
fi

echo "Total bench time: $(($(date +%s) - BENCH_START)) s (including setup and state builds); load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"

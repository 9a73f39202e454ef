#!/usr/bin/env bash
# Issue 17: a 24-instance change on module-shaped states of 1,001 / 10,001 /
# 100,001 terraform_data instances (fixtures/genmodules/genmodules.py: one
# root resource and TEAMS instances of a `for_each` team module of 100
# resources each), stategraph next to terraform.
#
# For each TEAMS in $TEAMS: the configuration and its state are generated
# (no terraform apply), the state pushed into stategraph, and stategraph's
# first plan (no discovery baseline yet: terraform's refresh-less plan of
# everything) timed once. Then REPS times, alternating which goes first,
# each changing one team's entry of the root map `gen` (24 instances):
#   terraform plan -var gen=...                     (its local state)
#   stategraph plan -var gen=...                    (the partial private state)
#   STATEGRAPH_PARTIAL_STATE=0 stategraph plan ...  (the whole state)
# and once each, after the plans: terraform apply and stategraph apply of
# such a change. Every plan must say `0 to add, 24 to change, 0 to destroy`.
# Wall seconds and peak RSS by GNU time; a markdown table on stdout.
#
# Also, at every N, the `cone` command (whole command, wall, median of REPS)
# of one team's `svc` (24 instances written) and of its `base` (100 written:
# every resource of that module instance reads it): the cone's rows are
# read from PostgreSQL by index, so its time should not grow with N.
#
# Environment:
#   TEAMS="10 100 1000"   team module instances (N = 1 + 100 * TEAMS)
#   REPS=3                repetitions of the plans (medians)
#   CONE_REPS=5           repetitions of each cone (median)
#   PLANS=1               0: push and cone only (no terraform run at all)
#   PLAN_TEAMS=...        plan only at these TEAMS (default: all of TEAMS)
#   APPLY=1               0: plans only
#   STATEGRAPH_BIN        the binary (default: cargo build --release)
#   KEEP_WORK=1           keep the work dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEAMS=${TEAMS:-"10 100 1000"}
REPS=${REPS:-3}
CONE_REPS=${CONE_REPS:-5}
PLANS=${PLANS:-1}
PLAN_TEAMS=${PLAN_TEAMS:-$TEAMS}
APPLY=${APPLY:-1}
TIME_BIN=/usr/bin/time
say() { printf 'partial_state.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/pg.sh
source "$(dirname "$0")/pg.sh"
source "$(dirname "$0")/lib.sh"

TERRAFORM=$(command -v "${STATEGRAPH_TERRAFORM:-terraform}") ||
    die "terraform not found on PATH; install it or set STATEGRAPH_TERRAFORM"
if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --locked -q) || die "cargo build failed"
    STATEGRAPH_BIN=$ROOT/target/release/stategraph
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sg-partial.XXXXXX")
cleanup() { stop_postgres; [[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT
start_postgres
# Its own data dir: the parse cache of .tf files starts empty and goes with $WORK.
export STATEGRAPH_DATABASE_URL=$PG_URL STATEGRAPH_TERRAFORM=$TERRAFORM CI=1 TF_IN_AUTOMATION=1 \
    STATEGRAPH_DATA_DIR=$WORK/data CHECKPOINT_DISABLE=1 TF_CLI_CONFIG_FILE=$WORK/empty.tfrc
: >"$WORK/empty.tfrc"

# timed OUT_PREFIX CMD...: runs CMD, stdout+stderr to OUT_PREFIX.log, "wall rss_kib" to OUT_PREFIX.time
timed() {
    local out=$1; shift
    $TIME_BIN -f '%e %M' -o "$out.time" "$@" >"$out.log" 2>&1 || {
        local code=$?
        [[ $code == 2 ]] || { tail -20 "$out.log" >&2; die "$* failed ($code)"; }
    }
}
expect_24() { grep -q "0 to add, 24 to change, 0 to destroy" "$1.log" || { tail -30 "$1.log" >&2; die "$1: not the 24-instance change"; }; }

# cone_ms OUT ADDR: wall milliseconds of one `stategraph cone ADDR`, and its
# write/read sizes in OUT.sizes.
cone_ms() {
    local out=$1 addr=$2 t0 t1
    t0=$(now)
    "$STATEGRAPH_BIN" --state "bench$T" cone --json "$addr" >"$out.json" 2>"$out.err" ||
        { cat "$out.err" >&2; die "cone $addr failed"; }
    t1=$(now)
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=d["timings"]; print(len(d["write"]), len(d["read"]), "rows read %.1f ms, graph built %.1f ms, cone %.2f ms" % (t["load_ms"], t["build_ms"], t["cone_ms"]))' \
        "$out.json" >"$out.sizes"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

PLAN_ROWS=""
CONE_ROWS=""
for T in $TEAMS; do
    N=$((1 + 100 * T))
    D=$WORK/$T
    python3 "$ROOT/fixtures/genmodules/genmodules.py" --teams "$T" --out "$D/tf"
    cp -r "$D/tf" "$D/sg"; rm "$D/sg/state.tfstate"; mv "$D/tf/state.tfstate" "$D/tf/terraform.tfstate"
    timed "$D/push" env -C "$D/sg" "$STATEGRAPH_BIN" --state "bench$T" state push "$D/tf/terraform.tfstate"
    say "N=$N: push $(cut -d' ' -f1 "$D/push.time") s"

    for what in svc base; do
        addr="module.team[\"team-0003\"].terraform_data.$what"
        for r in $(seq "$CONE_REPS"); do cone_ms "$D/cone.$what.$r" "$addr"; done >"$D/cone.$what.ms"
        read -r w rd inside <"$D/cone.$what.$CONE_REPS.sizes"
        CONE_ROWS+="| $N | \`$addr\` | $w | $rd | $(median <"$D/cone.$what.ms") |"$'\n'
        say "N=$N: cone of $addr ($w write, $rd read): $(tr '\n' ' ' <"$D/cone.$what.ms")ms (last: $inside)"
    done

    [[ $PLANS == 1 && " $PLAN_TEAMS " == *" $T "* ]] || continue
    (cd "$D/tf" && "$TERRAFORM" init -no-color >/dev/null)
    (cd "$D/sg" && "$STATEGRAPH_BIN" init -no-color >/dev/null)
    timed "$D/first" env -C "$D/sg" "$STATEGRAPH_BIN" --state "bench$T" plan -no-color
    say "N=$N: first plan $(cut -d' ' -f1 "$D/first.time") s"
    gen='gen={"team-0003"="2"}'
    for r in $(seq "$REPS"); do
        order="tf sgp sgw"; (( r % 2 == 0 )) && order="sgw sgp tf"
        for who in $order; do
            case $who in
                tf) timed "$D/tf.$r" env -C "$D/tf" "$TERRAFORM" plan -no-color -input=false -var "$gen" ;;
                sgp) timed "$D/sgp.$r" env -C "$D/sg" "$STATEGRAPH_BIN" --state "bench$T" plan -no-color -input=false -var "$gen" ;;
                sgw) timed "$D/sgw.$r" env -C "$D/sg" STATEGRAPH_PARTIAL_STATE=0 "$STATEGRAPH_BIN" --state "bench$T" plan -no-color -input=false -var "$gen" ;;
            esac
            expect_24 "$D/$who.$r"
        done
        say "N=$N rep $r: tf $(cut -d' ' -f1 "$D/tf.$r.time") sg partial $(cut -d' ' -f1 "$D/sgp.$r.time") sg whole $(cut -d' ' -f1 "$D/sgw.$r.time")"
    done
    med() { cat "$D"/$1.*.time | awk -v c="$2" '{ print $c }' | median; }
    tfw=$(med tf 1); sgpw=$(med sgp 1); sgww=$(med sgw 1)
    rss="$(mib "$(med tf 2)") / $(mib "$(med sgp 2)") / $(mib "$(med sgw 2)")"
    tfa="-"; sga="-"; ra="-"
    if [[ $APPLY == 1 ]]; then
        timed "$D/tfa" env -C "$D/tf" "$TERRAFORM" apply -auto-approve -no-color -input=false -var "$gen"
        timed "$D/sga" env -C "$D/sg" "$STATEGRAPH_BIN" --state "bench$T" apply -auto-approve -no-color -input=false -var "$gen"
        grep -q "0 added, 24 changed, 0 destroyed" "$D/tfa.log" && grep -q "0 added, 24 changed, 0 destroyed" "$D/sga.log" ||
            die "an apply did not change the 24 instances"
        tfa=$(cut -d' ' -f1 "$D/tfa.time"); sga=$(cut -d' ' -f1 "$D/sga.time"); ra=$(ratio "$sga" "$tfa")
        say "N=$N apply: tf $tfa sg $sga"
    fi
    PLAN_ROWS+="$(printf '| %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | **%s** |' "$N" "$tfw" "$sgpw" "$sgww" \
        "$(ratio "$sgpw" "$tfw")" "$(ratio "$sgww" "$tfw")" "$rss" "$(cut -d' ' -f1 "$D/first.time")" "$tfa" "$sga" "$ra")"$'\n'
done

if [[ -n $PLAN_ROWS ]]; then
    printf '| N | terraform plan (s) | stategraph plan, partial state (s) | stategraph plan, whole state (s) | **sg / tf**, partial | sg / tf, whole | peak RSS tf / sg partial / sg whole (MiB) | first plan, no baseline (s) | terraform apply (s) | stategraph apply (s) | **sg / tf apply** |\n'
    printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    printf '%s\n' "$PLAN_ROWS"
fi
printf '| N | `stategraph cone` of | write | read | whole command (ms) |\n'
printf '|---:|---|---:|---:|---:|\n'
printf '%s' "$CONE_ROWS"

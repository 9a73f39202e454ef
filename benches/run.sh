#!/usr/bin/env bash
# The benchmark, in one command: stategraph next to terraform, side by side in
# one run (the tools alternating which goes first, several repetitions,
# medians), then a summary of the goals.
#
#   1. state size: push / pull / cone at 10,000 and 100,000 instances, next
#      to terraform show -json and state list          (benches/state_size.sh)
#   2. K = 1, 3, 6 concurrent disjoint applies, terraform on its pg backend
#      with -lock-timeout; and the wrapper's overhead on 5 resources
#                                                     (benches/plan_apply.sh)
#   3. plan of a 12-resource change for N = 100, 500, 1,000, 2,847,
#      terraform_data (no refresh cost)               (benches/plan_sweep.sh)
#   4. the same with aws resources on a local moto server, every plan at 0 and
#      50 ms added per API request, API requests counted
#                                       (FLAVOUR=aws benches/plan_sweep.sh)
#   5. benches/summary.py: goals and ratios -> $OUT_DIR/summary.md
#
# Every section writes its report (.md), CSV and plots into $OUT_DIR. About
# 90 minutes on 2 cores, most of it terraform's own aws plans and the
# quadratic builds of the large states; QUICK=1 runs a small version of
# every section (about 15 minutes) to check the setup.
#
# Environment:
#   OUT_DIR=benches/results   where everything goes
#   SECTIONS="1 2 3 4"        which sections to run (the summary always runs)
#   REPS=3                    repetitions of every timed command
#   QUICK=1                   small sizes, one repetition
#   STATEGRAPH_BIN            use this binary instead of `cargo build --release`
#   and what the section scripts read: STATEGRAPH_TERRAFORM, STATEGRAPH_PG_BIN,
#   STATEGRAPH_TF_PLUGIN_MIRROR, STATEGRAPH_PYTHON, PG_DURABLE (see their headers)
#
# Needs: python3, terraform, the PostgreSQL server binaries, GNU time; moto
# (pip install -r fixtures/requirements-moto.txt) and the hashicorp/aws
# provider mirror for section 4; matplotlib for labelled plots
# (pip install -r benches/requirements.txt; without it the plots are plain).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=$(realpath -m "${OUT_DIR:-$ROOT/benches/results}")
SECTIONS=${SECTIONS:-"1 2 3 4"}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1}
    SIZES=${SIZES:-10000}
    KS=${KS:-"1 3"}
    TD_NS=${TD_NS:-"100 500"}
    AWS_NS=${AWS_NS:-100}
    OVERHEAD_REPS=${OVERHEAD_REPS:-3}
else
    REPS=${REPS:-3}
    SIZES=${SIZES:-"10000 100000"}
    KS=${KS:-"1 3 6"}
    TD_NS=${TD_NS:-"100 500 1000 2847"}
    AWS_NS=${AWS_NS:-"100 500 1000 2847"}
    OVERHEAD_REPS=${OVERHEAD_REPS:-7}
fi
START=$(date +%s)

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

command -v python3 >/dev/null || die "python3 not found"
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    say "matplotlib is missing: the plots will be plain (pip install -r benches/requirements.txt for labelled ones)"
fi
if [[ -z ${STATEGRAPH_BIN:-} ]]; then
    say "building stategraph (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin stategraph) || die "cargo build --release failed"
    STATEGRAPH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stategraph"
fi
[[ -x $STATEGRAPH_BIN ]] || die "no stategraph binary at $STATEGRAPH_BIN"
export STATEGRAPH_BIN OUT_DIR REPS
mkdir -p "$OUT_DIR"

section() {
    local n=$1 what=$2
    shift 2
    local t0
    t0=$(date +%s)
    say "section $n: $what"
    "$@" || die "section $n ($what) failed"
    say "section $n done in $(($(date +%s) - t0)) s"
}

has 1 && section 1 "state size (SIZES=$SIZES)" \
    env SIZES="$SIZES" "$ROOT/benches/state_size.sh"
has 2 && section 2 "K = $KS concurrent applies, wrapper overhead" \
    env SECTIONS="2 4" KS="$KS" OVERHEAD_REPS="$OVERHEAD_REPS" "$ROOT/benches/plan_apply.sh"
has 3 && section 3 "plan vs state size, terraform_data (N = $TD_NS)" \
    env FLAVOUR=terraform_data NS="$TD_NS" "$ROOT/benches/plan_sweep.sh"
has 4 && section 4 "plan vs state size, aws on moto, 0 and 50 ms per request (N = $AWS_NS)" \
    env FLAVOUR=aws NS="$AWS_NS" LATENCIES="${LATENCIES:-0 50}" "$ROOT/benches/plan_sweep.sh"

python3 "$ROOT/benches/summary.py" "$OUT_DIR" \
    "$( ((QUICK)) && printf 'QUICK=1 ')benches/run.sh; $(nproc) cores, $(date -u +%Y-%m-%d), $(($(date +%s) - START)) s in all" \
    >"$OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
say "summary: $OUT_DIR/summary.md (all sections: $(($(date +%s) - START)) s)"

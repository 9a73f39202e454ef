#!/usr/bin/env bash
# Installs stategraph and what it needs on a Debian-like machine, then runs a
# short demo on the embedded database.
#
#   ./install.sh              install everything, build and install stategraph, run the demo
#   ./install.sh --deps-only  only what the test suite needs (PostgreSQL server, moto, Chromium, chromedriver)
#   ./install.sh --demo       only the demo, with the stategraph already on PATH
#
# Needs: cargo (rustup), and root or sudo for apt-get where PostgreSQL (or, for
# --deps-only, Chromium or chromedriver) is missing.
# terraform is not installed here (no network route to its releases on some
# machines): install terraform >= 1.5 yourself, or set STATEGRAPH_TERRAFORM.
set -euo pipefail
cd "$(dirname "$0")"

deps_only=0 demo_only=0
case "${1:-}" in
    --deps-only) deps_only=1 ;;
    --demo) demo_only=1 ;;
    "") ;;
    *) printf 'install.sh: unknown option %s (expected --deps-only or --demo)\n' "$1" >&2; exit 1 ;;
esac

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# --- PostgreSQL server binaries (initdb, pg_ctl, postgres) -------------------
find_initdb() {
    if [ -n "${STATEGRAPH_PG_BIN:-}" ] && [ -x "$STATEGRAPH_PG_BIN/initdb" ]; then echo "$STATEGRAPH_PG_BIN/initdb"; return; fi
    if command -v initdb >/dev/null; then command -v initdb; return; fi
    ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1
}
if [ -z "$(find_initdb)" ]; then
    command -v apt-get >/dev/null || die "PostgreSQL server binaries are missing and apt-get is not available: install PostgreSQL (>= 13) and set STATEGRAPH_PG_BIN to its bin directory"
    say "installing the PostgreSQL server (apt-get install postgresql)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    [ -n "$(find_initdb)" ] || die "apt-get installed postgresql but initdb is still not found"
fi
say "PostgreSQL server: $(dirname "$(find_initdb)")"
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root, but there is no 'postgres' user to run PostgreSQL as (it refuses root): apt-get install postgresql creates it, or set STATEGRAPH_PG_USER"
fi

# --- terraform ----------------------------------------------------------------
# A TF_CLI_CONFIG_FILE naming a missing file makes terraform warn on every call.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then export TF_CLI_CONFIG_FILE=/dev/null; fi
TERRAFORM=${STATEGRAPH_TERRAFORM:-$(command -v terraform || command -v tofu || true)}
if [ -z "$TERRAFORM" ]; then
    say "WARNING: terraform is not on PATH."
    say "  stategraph runs terraform for plan/apply/state show, and the tests need it."
    say "  Install terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) or OpenTofu,"
    say "  or set STATEGRAPH_TERRAFORM=/path/to/terraform."
    [ "$deps_only" = 1 ] && die "the test suite needs terraform"
else
    say "terraform: $TERRAFORM ($("$TERRAFORM" version | head -n 1))"
fi

# --- Chromium and chromedriver (the web page's tests load it in a headless
# browser and click in it) -------------------------------------------------------
find_chromium() {
    if [ -n "${STATEGRAPH_TEST_CHROMIUM:-}" ] && [ -x "$STATEGRAPH_TEST_CHROMIUM" ]; then echo "$STATEGRAPH_TEST_CHROMIUM"; return; fi
    command -v chromium || command -v chromium-browser || command -v google-chrome || true
}
find_chromedriver() {
    if [ -n "${STATEGRAPH_TEST_CHROMEDRIVER:-}" ] && [ -x "$STATEGRAPH_TEST_CHROMEDRIVER" ]; then echo "$STATEGRAPH_TEST_CHROMEDRIVER"; return; fi
    command -v chromedriver || true
}
if [ "$deps_only" = 1 ]; then
    if [ -z "$(find_chromium)" ] || [ -z "$(find_chromedriver)" ]; then
        command -v apt-get >/dev/null || die "Chromium or chromedriver is missing and apt-get is not available: install both (of one version) and put them on PATH, or set STATEGRAPH_TEST_CHROMIUM and STATEGRAPH_TEST_CHROMEDRIVER to them"
        say "installing Chromium and chromedriver for the web page's tests (apt-get install chromium chromium-driver)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
        [ -n "$(find_chromium)" ] || die "apt-get installed chromium but it is still not on PATH"
        [ -n "$(find_chromedriver)" ] || die "apt-get installed chromium-driver but chromedriver is still not on PATH"
    fi
    say "Chromium: $(find_chromium), chromedriver: $(find_chromedriver)"

    # --- moto (a local AWS API for the aws-provider tests) --------------------
    PY=${STATEGRAPH_PYTHON:-python3}
    if ! "$PY" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
        say "installing moto for the aws-provider tests ($PY -m pip install -r fixtures/requirements-moto.txt)"
        "$PY" -m pip install -q -r fixtures/requirements-moto.txt || die "pip could not install moto[server]"
    fi
    say "dependencies ready"
    exit 0
fi

# --- stategraph ------------------------------------------------------------------
if [ "$demo_only" = 1 ]; then
    BIN=$(command -v stategraph) || die "--demo runs the stategraph on PATH, and there is none: run ./install.sh"
else
    command -v cargo >/dev/null || die "cargo is not on PATH: install Rust with rustup (https://rustup.rs)"
    say "building and installing stategraph (cargo install --path . --locked)"
    cargo install --quiet --path . --locked --force
    BIN="$(dirname "$(command -v cargo)")/stategraph"
    [ -x "$BIN" ] || BIN="${CARGO_HOME:-$HOME/.cargo}/bin/stategraph"
fi
say "installed $BIN ($("$BIN" --version))"
on_path=""
[ "$(command -v stategraph || true)" = "$BIN" ] || on_path=" (put $(dirname "$BIN") on PATH first)"

# What to run in one's own project: the last words, with or without the demo.
next_steps() {
    say "next, in your own terraform project$on_path:"
    say "  stategraph init -migrate-state   # stores its existing terraform state (a new project: stategraph init)"
    say "  stategraph plan                  # then plan and apply as with terraform"
    say "for a team or CI, point everyone at one PostgreSQL: STATEGRAPH_DATABASE_URL=postgres://... (README: \"CI\")"
}

# --- demo on the embedded database -----------------------------------------------
[ -n "$TERRAFORM" ] || { say "skipping the demo: it needs terraform"; next_steps; exit 0; }
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
cp -r fixtures/tf/chain/. "$demo/"
# The demo is about the embedded database: made here even under CI=true.
export CHECKPOINT_DISABLE=1 STATEGRAPH_TERRAFORM="$TERRAFORM" STATEGRAPH_ALLOW_EMBEDDED=1
say "demo: fixtures/tf/chain (19 terraform_data instances in three branches) in $demo, state \"demo\""
cd "$demo"
set -x
"$BIN" init -no-color
"$BIN" --state demo apply -auto-approve -no-color
"$BIN" --state demo apply -auto-approve -no-color -var 'gen={a="2",b="1",c="1"}'
"$BIN" --state demo log --limit 3
"$BIN" --state demo state pull > "$demo/pulled.tfstate"
"$BIN" db status
{ set +x; } 2>/dev/null
python3 - "$demo/pulled.tfstate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = sum(len(r["instances"]) for r in s["resources"])
sys.exit(0 if n == 19 else f"demo: expected 19 instances in the stored state, found {n}")
PY
say "done: applied, changed one branch (only its cone was locked and written), state kept in PostgreSQL."
data_dir=$("$BIN" db status --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["data_dir"])')
say "started: the embedded PostgreSQL cluster in $data_dir, holding the demo's state \"demo\"."
say "  It keeps running; stop it with: stategraph db stop   (any stategraph command starts it again)"
next_steps

# Shared by the bench scripts (sourced, not run): numbers, the terraform
# wrapper that times every terraform command stategraph runs, the moto server,
# the latency proxy in front of it, and the aws provider block.
#
# The caller defines `say`, `die` and WORK (its private work dir), sources
# pg.sh first (free_port), and calls stop_moto from its exit trap.
#
# Settings: STATEGRAPH_PYTHON (python with moto[server], default python3),
# STATEGRAPH_TF_PLUGIN_MIRROR (provider mirror holding hashicorp/aws).

# ---------------------------------------------------------------- numbers

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "?" || b == "?") print "?"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# col FILE N: median of column N
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
mib() { awk -v k="$1" 'BEGIN { if (k == "?") print "?"; else printf "%.0f", k / 1024 }'; }

# ---------------------------------------------------------------- terraform wrapper

# make_tf_wrapper TERRAFORM: writes $WORK/tf-wrapper, a terraform that logs
# "SUBCOMMAND WALL CPU START END" per call to $SG_TF_LOG when that is set
# (CPU: user + system seconds of terraform and its providers, from bash's
# `times`; START/END: epoch seconds, so that commands stategraph runs side by
# side can be told apart). Point STATEGRAPH_TERRAFORM at it to see where a
# stategraph command's time goes.
make_tf_wrapper() {
    cat >"$WORK/tf-wrapper" <<EOF
#!/usr/bin/env bash
start=\$(date +%s.%N)
"$1" "\$@"
rc=\$?
end=\$(date +%s.%N)
if [[ -n \${SG_TF_LOG:-} ]]; then
    # The second line of \`times\` (run in this shell, not a subshell): the
    # children's user and system time, "1m2.5s 0m0.3s".
    times >"\$SG_TF_LOG.times.\$\$"
    cpu=\$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split(\$i, p, "m"); t += p[1] * 60 + p[2] } printf "%.2f", t }' "\$SG_TF_LOG.times.\$\$")
    rm -f "\$SG_TF_LOG.times.\$\$"
    sub=""
    for a in "\$@"; do [[ \$a == -* ]] || { sub=\$a; break; }; done
    # stategraph's discovery plans write discover.tfplan; its scoped
    # refresh is a refresh-only plan.
    if [[ \$sub == plan ]]; then
        for a in "\$@"; do
            [[ \$a == -out=*discover* ]] && sub=plan-discovery
            [[ \$a == -refresh-only ]] && sub=plan-refresh
        done
    fi
    awk -v s="\${sub:-?}" -v a="\$start" -v b="\$end" -v c="\$cpu" 'BEGIN { printf "%s %.2f %s %.3f %.3f\n", s, b - a, c, a, b }' >>"\$SG_TF_LOG"
fi
exit \$rc
EOF
    chmod +x "$WORK/tf-wrapper"
}

# tf_spans.py (next to this file) reads the wrapper's logs.
TF_SPANS="$(dirname "${BASH_SOURCE[0]}")/tf_spans.py"

# tf_breakdown LOGDIR: the terraform calls of one stategraph run, in order,
# with median wall and CPU times over the per-run logs LOGDIR/*.tflog, e.g.
# "plan-refresh 9.10s/12.0cpu, plan 8.90s/11.8cpu (terraform total 18.00s, 8.90s of it side by side)".
tf_breakdown() { python3 "$TF_SPANS" breakdown "$1"; }

# tf_phases TFLOG WALL: one stategraph plan's time split into phases, printed
# as "init discovery refresh show targeted other_tf stategraph side_by_side"
# (seconds): init, the refresh-less plans (discovery: of the whole
# configuration, or of the blocks reading a changed value), the scoped
# refresh (a refresh-only plan of the written instances), every show, the
# other plans (targeted), any other terraform command; then the part of
# WALL when no terraform command ran (stategraph's own work, PostgreSQL,
# process start-ups), and how long terraform commands ran side by side (the
# scoped refresh next to the plan: the phases then add up to more than WALL
# by that much).
tf_phases() { python3 "$TF_SPANS" phases "$1" "$2"; }

# tf_cpu TFLOG: CPU seconds (user + system) of the terraform commands in one
# stategraph run's log, their providers included.
tf_cpu() { awk '{ c += $3 } END { printf "%.2f\n", c }' "$1"; }

# ---------------------------------------------------------------- aws provider on moto

MOTO_PID=""
PROXY_PID=""

find_mirror() {
    local d
    for d in "${STATEGRAPH_TF_PLUGIN_MIRROR:-}" /opt/tf-plugins /usr/share/terraform/plugins /usr/local/share/terraform/plugins; do
        [[ -n $d && -d $d/registry.terraform.io ]] && { echo "$d"; return 0; }
    done
    return 1
}

# write_mirror_tfrc FILE: a terraform CLI config installing providers from the
# offline mirror only; fails when there is no mirror.
write_mirror_tfrc() {
    local mirror
    mirror=$(find_mirror) || return 1
    cat >"$1" <<EOF
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
}

# start_moto: moto's server on 127.0.0.1 and a free port. Sets MOTO_PORT,
# MOTO_LOG, MOTO_PID. Fails when moto[server] is not importable.
start_moto() {
    local py=${STATEGRAPH_PYTHON:-python3}
    "$py" -c 'import moto.server, flask, flask_cors' 2>/dev/null || return 1
    MOTO_PORT=$(free_port)
    MOTO_LOG="$WORK/moto.log"
    "$py" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$MOTO_PID" 2>/dev/null || { cat "$MOTO_LOG" >&2; return 1; }
        if python3 - "$MOTO_PORT" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
EOF
            say "moto $("$py" -c 'import moto; print(moto.__version__)') on 127.0.0.1:$MOTO_PORT"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# AWS API requests moto served so far (its own /moto-api/ calls excluded),
# as tests/it/common/moto.rs counts them.
moto_requests() {
    grep -F '" ' "$MOTO_LOG" | grep -F ' HTTP/' | grep -vcF '/moto-api/' || true
}

# start_latency_proxy DELAY_MS: benches/latency_proxy.py in front of moto.
# Sets PROXY_PORT, PROXY_LOG, PROXY_PID.
start_latency_proxy() {
    PROXY_LOG="$WORK/proxy.log"
    : >"$PROXY_LOG"
    rm -f "$WORK/proxy.port"
    python3 "$(dirname "${BASH_SOURCE[0]}")/latency_proxy.py" --upstream "127.0.0.1:$MOTO_PORT" \
        --delay-ms "$1" --log "$PROXY_LOG" --port-file "$WORK/proxy.port" \
        </dev/null >"$WORK/proxy.out" 2>&1 &
    PROXY_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.out" >&2; return 1; }
        [[ -s $WORK/proxy.port ]] && { PROXY_PORT=$(cat "$WORK/proxy.port"); say "latency proxy on 127.0.0.1:$PROXY_PORT, $1 ms per request"; return 0; }
        sleep 0.1
    done
    return 1
}

# proxy_set_delay MS
proxy_set_delay() {
    python3 - "$PROXY_PORT" "$1" <<'EOF'
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/__latency_proxy__/delay?ms={sys.argv[2]}", data=b"", method="POST"), timeout=5).read()
EOF
}

# Requests the proxy forwarded so far.
proxy_requests() { wc -l <"$PROXY_LOG" | tr -d ' '; }

stop_moto() {
    local p
    for p in "$PROXY_PID" "$MOTO_PID"; do
        [[ -n $p ]] || continue
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PROXY_PID=""
    MOTO_PID=""
}

# moto_provider_tf [ENDPOINT]: the aws provider block for moto (default: moto
# itself; pass the latency proxy's URL to go through it), dummy credentials.
moto_provider_tf() {
    local ep=${1:-http://127.0.0.1:$MOTO_PORT}
    cat <<EOF
# Written by the stategraph benches: the local moto server, dummy credentials.
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
    ssm = "$ep"
  }
}
EOF
}

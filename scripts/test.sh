#!/usr/bin/env bash
# Runs every test of the workspace, including the cross-crate HTTP suite
# (tests/e2e), which needs the `events` binary and Python with pyarrow, moto
# and boto3.
#
#   bash scripts/test.sh [extra `cargo test` arguments]
#
# Then runs the JavaScript client's tests (clients/js: `npm ci`, `npm test`,
# against the binary just built) unless EVENTS_SKIP_JS=1, and the e2e suite
# again against the Cloudflare host in local workerd (scripts/worker.sh test:
# installs its pinned tools once, builds the wasm), unless EVENTS_SKIP_WORKER=1.
#
# Creates (once) a venv at ${EVENTS_VENV:-$HOME/.cache/events-do/venv} with
# tests/e2e/py/requirements.txt, reinstalling when that file changes, and
# exports EVENTS_PYTHON for the tests; likewise a venv at
# ${EVENTS_FUZZ_VENV:-$HOME/.cache/events-do/venv-fuzz} with the OpenAPI
# fuzzer (tests/e2e/py/fuzz-requirements.txt), exporting EVENTS_SCHEMATHESIS
# for tests/e2e/tests/openapi_fuzz.rs. Keeps CARGO_TARGET_DIR if set.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ensure_venv DIR REQUIREMENTS: creates the venv DIR (once) and installs
# REQUIREMENTS into it whenever that file changed since the last install.
ensure_venv() {
    local venv="$1" requirements="$2"
    local stamp="$venv/.events-requirements.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "==> creating Python venv at $venv"
        mkdir -p "$(dirname "$venv")"
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "==> installing Python test tools ($requirements)"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    fi
}

venv="${EVENTS_VENV:-$HOME/.cache/events-do/venv}"
ensure_venv "$venv" "$root/tests/e2e/py/requirements.txt"
fuzz_venv="${EVENTS_FUZZ_VENV:-$HOME/.cache/events-do/venv-fuzz}"
ensure_venv "$fuzz_venv" "$root/tests/e2e/py/fuzz-requirements.txt"
export EVENTS_SCHEMATHESIS="$fuzz_venv/bin/schemathesis"
echo "==> EVENTS_SCHEMATHESIS=$EVENTS_SCHEMATHESIS ($("$EVENTS_SCHEMATHESIS" --version))"
export EVENTS_PYTHON="$venv/bin/python"
echo "==> EVENTS_PYTHON=$EVENTS_PYTHON ($("$EVENTS_PYTHON" -c 'import pyarrow, moto, boto3; print("pyarrow", pyarrow.__version__, "moto", moto.__version__, "boto3", boto3.__version__)'))"

if [[ -f "$root/tests/e2e/js/package.json" ]]; then
    echo "==> installing Node test tools (tests/e2e/js)"
    (cd "$root/tests/e2e/js" && npm ci --no-audit --no-fund --silent)
fi

echo "==> building the events binary"
cargo build -p events-cli --bin events

# --no-fail-fast: one failing test binary must not hide the others' results.
echo "==> cargo test --workspace --no-fail-fast $*"
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

# The JavaScript client (clients/js) against the binary built above: builds
# its TypeScript and runs `node --test`. EVENTS_SKIP_JS=1 skips it.
if [[ "${EVENTS_SKIP_JS:-0}" != 1 && -f "$root/clients/js/package.json" ]]; then
    echo "==> the JavaScript client (clients/js: npm ci, npm test)"
    started=$SECONDS
    (
        cd "$root/clients/js"
        npm ci --no-audit --no-fund --silent
        EVENTS_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/events" npm test --silent
    ) || status=$?
    echo "==> JavaScript client: $((SECONDS - started)) s"
fi

# The same e2e suite against the Cloudflare host (the Worker in local workerd).
# EVENTS_SKIP_WORKER=1 skips it (e.g. for a quick local run).
if [[ "${EVENTS_SKIP_WORKER:-0}" != 1 ]]; then
    echo "==> the e2e suite against the Worker (scripts/worker.sh test)"
    started=$SECONDS
    EVENTS_NATIVE_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" bash "$root/scripts/worker.sh" test || status=$?
    echo "==> Worker suite: $((SECONDS - started)) s (tools, wasm build, run)"
fi
exit "$status"

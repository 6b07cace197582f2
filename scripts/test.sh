#!/usr/bin/env bash
# The one command that runs all of Latchkey's tests:
#   1. cargo build --workspace --bins
#   2. cargo test --workspace            (Rust unit + integration tests)
#   3. pytest tests/e2e                  (end-to-end tests against target/debug/latchkey)
#   4. node --test tests/browser         (web UI in headless Chromium; installs chromium/npm deps if missing)
# Every stage runs even if an earlier one failed (except e2e, which needs a fresh
# binary); the script exits non-zero if any stage failed.
#
# PostgreSQL-backed tests need LATCHKEY_TEST_POSTGRES_URL; get one with
#   eval "$(bash scripts/postgres.sh)"
# Extra arguments are passed to pytest (e.g. scripts/test.sh -k signin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

PG_BANNER='PostgreSQL suite SKIPPED: set LATCHKEY_TEST_POSTGRES_URL or run scripts/postgres.sh'
pg_banner() {
    if [ -z "${LATCHKEY_TEST_POSTGRES_URL:-}" ]; then
        echo
        echo "####################################################################################"
        echo "##  $PG_BANNER"
        echo "####################################################################################"
        echo
    fi
}

declare -a STAGE_NAMES=() STAGE_RESULTS=() STAGE_SECS=()
FAILED=0
SUITE_START=$SECONDS
STAGE_START=$SECONDS
record() { # name rc
    local took=$((SECONDS - STAGE_START))
    STAGE_NAMES+=("$1")
    STAGE_SECS+=("$took")
    if [ "$2" -eq 0 ]; then STAGE_RESULTS+=("ok"); else STAGE_RESULTS+=("FAILED (exit $2)"); FAILED=1; fi
    echo "==> [test.sh] $1: ${STAGE_RESULTS[-1]} in ${took}s"
}
stage() { echo; echo "==> [test.sh] $*"; STAGE_START=$SECONDS; }

pg_banner

# --- Python dependencies of the e2e suite ------------------------------------
stage "python dependencies (tests/requirements.txt)"
if python3 -c 'import pytest, pyotp, requests, pytest_timeout, authlib, pyrad, playwright' >/dev/null 2>&1; then
    echo "already installed"
    record "python-deps" 0
else
    rc=0
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        -r tests/requirements.txt || rc=$?
    record "python-deps" "$rc"
fi

# --- radclient (FreeRADIUS) for the RADIUS e2e tests (skipped without it) ---
stage "radclient (freeradius-utils)"
if command -v radclient >/dev/null 2>&1; then
    echo "already installed"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq freeradius-utils >/dev/null) \
        || echo "could not install freeradius-utils: the radclient test will be skipped"
else
    echo "radclient not available: the radclient test will be skipped (pyrad tests still run)"
fi
record "radclient" 0

# --- Chromium for the WebAuthn e2e tests (virtual authenticator over CDP) -------
stage "chromium (apt)"
if command -v chromium >/dev/null 2>&1; then
    echo "already installed"
    record "chromium" 0
else
    rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || rc=$?
    record "chromium" "$rc"
fi

# --- Rust build ----------------------------------------------------------------
stage "cargo build --workspace --bins"
build_rc=0
cargo build --workspace --bins || build_rc=$?
record "cargo-build" "$build_rc"

# --- Rust tests ----------------------------------------------------------------
stage "cargo test --workspace"
rc=0
cargo test --workspace || rc=$?
record "cargo-test" "$rc"

# --- End-to-end tests ----------------------------------------------------------
stage "pytest tests/e2e"
BIN="$ROOT/target/debug/latchkey"
if [ "$build_rc" -ne 0 ]; then
    echo "NOT RUN: cargo build failed, so $BIN may be stale or missing"
    record "e2e" 1
elif [ ! -x "$BIN" ]; then
    echo "NOT RUN: $BIN does not exist after the build"
    record "e2e" 1
else
    rc=0
    LATCHKEY_BIN="$BIN" python3 -m pytest tests/e2e -v -rfEs "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests (exit 5): treated as a failure"
    fi
    record "e2e" "$rc"
fi

# --- Browser tests (web UI in Debian's headless Chromium) ------------------------
stage "browser tests (tests/browser: playwright-core + axe-core, node --test)"
browser_rc=0
if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium (apt)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || browser_rc=$?
fi
if [ "$browser_rc" -eq 0 ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) || browser_rc=$?
fi
if [ "$build_rc" -ne 0 ]; then
    echo "NOT RUN: cargo build failed"
    browser_rc=1
elif [ "$browser_rc" -eq 0 ]; then
    # Screenshots of every page land in test-output/screenshots/.
    (cd tests/browser && LATCHKEY_BIN="$BIN" node --test --test-concurrency=1) || browser_rc=$?
fi
record "browser" "$browser_rc"

# --- Summary -------------------------------------------------------------------
echo
echo "==> [test.sh] summary"
for i in "${!STAGE_NAMES[@]}"; do
    printf '    %-12s %-18s %5ss\n' "${STAGE_NAMES[$i]}" "${STAGE_RESULTS[$i]}" "${STAGE_SECS[$i]}"
done
echo "    total        $((SECONDS - SUITE_START))s"
pg_banner
if [ "$FAILED" -ne 0 ]; then
    echo "test.sh: FAILED (see stages above)"
    exit 1
fi
echo "test.sh: all stages passed"

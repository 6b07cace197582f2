#!/usr/bin/env bash
# Start a local PostgreSQL for Latchkey's test suite (idempotent; run as root).
#
#   eval "$(bash scripts/postgres.sh)"
#
# - installs Debian's `postgresql` package if no server is installed,
# - creates the cluster if the package left none, starts it if it is down,
# - creates role `latchkey` (password `latchkey`, LOGIN CREATEDB) and database
#   `latchkey_test` if missing,
# - waits until the server accepts password logins over TCP,
# - prints ONE line on stdout:
#     export LATCHKEY_TEST_POSTGRES_URL=postgres://latchkey:latchkey@127.0.0.1:PORT/latchkey_test
# Everything else goes to stderr, so the output can be eval'd.
#
# Environment knobs: LATCHKEY_PG_PORT (default 5432, used only when a cluster
# has to be created), LATCHKEY_PG_WAIT_SECONDS (default 60).
set -euo pipefail

ROLE=latchkey
ROLE_PASSWORD=latchkey
DB=latchkey_test
WANT_PORT="${LATCHKEY_PG_PORT:-5432}"
WAIT_SECONDS="${LATCHKEY_PG_WAIT_SECONDS:-60}"

log() { echo "postgres.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" != "0" ]; then
    die "must run as root (it installs and starts the system PostgreSQL cluster)"
fi

# Newest installed major version that has a server binary, or empty.
server_version() {
    local d v best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$d" ] || continue
        v="${d#/usr/lib/postgresql/}"; v="${v%%/*}"
        if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)" = "$v" ]; then
            best="$v"
        fi
    done
    printf '%s' "$best"
}

PGVER="$(server_version)"
if [ -z "$PGVER" ] || ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v pg_lsclusters >/dev/null 2>&1; then
    log "PostgreSQL server not installed; installing Debian package 'postgresql'"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2 || log "warning: apt-get update failed; trying the install anyway"
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends postgresql >&2
    PGVER="$(server_version)"
    [ -n "$PGVER" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
fi
log "using PostgreSQL $PGVER"

# Pick the first cluster of that version (normally 'main'); create one if none.
cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v v="$PGVER" '$1 == v { print; exit }'; }
LINE="$(cluster_line)"
if [ -z "$LINE" ]; then
    log "no cluster for $PGVER; creating '$PGVER main' on port $WANT_PORT"
    pg_createcluster "$PGVER" main --port "$WANT_PORT" >&2
    LINE="$(cluster_line)"
    [ -n "$LINE" ] || die "pg_createcluster did not create a cluster"
fi
CLUSTER="$(awk '{print $2}' <<<"$LINE")"
PORT="$(awk '{print $3}' <<<"$LINE")"
STATUS="$(awk '{print $4}' <<<"$LINE")"
DATADIR="$(awk '{print $6}' <<<"$LINE")"

# The socket directory lives on a tmpfs on some machines and vanishes on reboot.
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

if [ "$STATUS" != "online" ]; then
    log "starting cluster $PGVER/$CLUSTER (port $PORT, data $DATADIR)"
    if ! pg_ctlcluster "$PGVER" "$CLUSTER" start >&2; then
        # A stale postmaster.pid from a machine that was stopped abruptly is the usual cause.
        if [ -f "$DATADIR/postmaster.pid" ]; then
            pid="$(head -n1 "$DATADIR/postmaster.pid" || true)"
            if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
                log "removing stale $DATADIR/postmaster.pid (pid $pid not running) and retrying"
                rm -f "$DATADIR/postmaster.pid"
            fi
        fi
        pg_ctlcluster "$PGVER" "$CLUSTER" start >&2 || {
            log "cluster failed to start; last log lines:"
            tail -n 30 "/var/log/postgresql/postgresql-$PGVER-$CLUSTER.log" >&2 2>/dev/null || true
            exit 1
        }
    fi
else
    log "cluster $PGVER/$CLUSTER already online on port $PORT"
fi

deadline=$(( $(date +%s) + WAIT_SECONDS ))
until pg_isready -q -h 127.0.0.1 -p "$PORT"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "PostgreSQL did not accept connections on 127.0.0.1:$PORT within ${WAIT_SECONDS}s"
    sleep 0.5
done

# Run SQL as the postgres superuser over the local socket (peer auth).
as_pg() { (cd /tmp && runuser -u postgres -- psql -X -q -p "$PORT" -v ON_ERROR_STOP=1 "$@"); }

if [ "$(as_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    log "creating role $ROLE"
    as_pg -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE_PASSWORD'" >&2
else
    # Keep the role usable even if someone changed it.
    as_pg -c "ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE_PASSWORD'" >&2
fi
if [ "$(as_pg -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    log "creating database $DB"
    as_pg -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi

URL="postgres://$ROLE:$ROLE_PASSWORD@127.0.0.1:$PORT/$DB"
# Final check: a password login over TCP, exactly as the tests will connect.
until psql -X -q "$URL" -tAc "SELECT 1" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { psql -X "$URL" -c "SELECT 1" >&2 || true; die "cannot log in as $ROLE over TCP"; }
    sleep 0.5
done
log "ready: $URL"
echo "export LATCHKEY_TEST_POSTGRES_URL=$URL"

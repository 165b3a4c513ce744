#!/usr/bin/env bash
# The real-PostgreSQL tier (tests/test_shadow_postgres.py): the PostgreSQL server binaries (initdb, pg_ctl,
# postgres) from the Debian package, and the psycopg driver (the postgres extra; the dev extra has it too).
# Idempotent. The tests start a throwaway cluster of their own on 127.0.0.1 (a temporary folder, a free port)
# and stop it at the end, so no system cluster is created here: create_main_cluster = false (Debian's
# postgresql-common), kept with --force-confold. As root the tests run initdb and pg_ctl as the package's
# `postgres` user (PostgreSQL refuses to run as root). Exit 1 when something cannot be installed; the tier
# then skips with the reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

if bindir="$(pg_bindir)"; then
  echo "install_postgres: PostgreSQL server binaries in $bindir ($("$bindir/pg_ctl" --version))"
else
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_postgres: cannot install the postgresql package (needs root and apt-get)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p /etc/postgresql-common
  [ -e /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" \
    > /etc/postgresql-common/createcluster.conf
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null; then
    echo "install_postgres: could not install the postgresql package" >&2
    exit 1
  fi
  bindir="$(pg_bindir)" || { echo "install_postgres: postgresql installed but initdb/pg_ctl not found" >&2; exit 1; }
  echo "install_postgres: installed $("$bindir/pg_ctl" --version) in $bindir"
fi

if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
  echo "install_postgres: running as root and there is no 'postgres' user to run the test cluster as" >&2
  exit 1
fi

if "$PY" -c "import psycopg" >/dev/null 2>&1; then
  echo "install_postgres: psycopg $("$PY" -c 'import psycopg; print(psycopg.__version__)') already installed"
else
  "$PY" -m pip install -q "psycopg[binary]>=3.1"
fi

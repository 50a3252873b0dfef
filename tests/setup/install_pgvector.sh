#!/usr/bin/env bash
# PostgreSQL with the pgvector extension for tests/test_vectordb.py (make test runs this;
# it does nothing when both are there). Debian, as root. Debian 12 has no pgvector
# package: there Debian's own pgvector source package (from Debian 13) is built against
# the installed server.
#
# Not root and not installed: it says so and exits 0, so `make test` goes on and the
# PostgreSQL tests skip, naming the reason (as root, CI included, they run and a missing
# server fails them). PGVECTOR_STRICT=1 makes that case exit 1 instead.
# POSTGRESQL_LIB / POSTGRESQL_SHARE: where the servers are (default Debian's layout).
set -euo pipefail

LIB=${POSTGRESQL_LIB:-/usr/lib/postgresql}
SHARE=${POSTGRESQL_SHARE:-/usr/share/postgresql}
server_version() { ls "$LIB" 2>/dev/null | sort -V | tail -1; }
have_vector() {
  local v
  v=$(server_version)
  [ -n "$v" ] && [ -x "$LIB/$v/bin/initdb" ] \
    && [ -f "$SHARE/$v/extension/vector.control" ]
}

have_vector && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL with pgvector is missing and installing it needs root (apt-get):" \
    "the PostgreSQL tests of tests/test_vectordb.py will skip; run \`sudo make pgvector\` to run them" >&2
  [ "${PGVECTOR_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ -n "$(server_version)" ] || apt-get install -y -qq postgresql >/dev/null
V=$(server_version)
if apt-cache show "postgresql-$V-pgvector" >/dev/null 2>&1; then
  apt-get install -y -qq "postgresql-$V-pgvector" >/dev/null
else
  apt-get install -y -qq "postgresql-server-dev-$V" build-essential dpkg-dev >/dev/null
  work=$(mktemp -d)
  chmod 755 "$work"  # apt downloads as _apt
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" source -qq --download-only pgvector >/dev/null 2>&1)
  (cd "$work" && dpkg-source -x ./pgvector_*.dsc src >/dev/null)
  make -s -C "$work/src" PG_CONFIG="$LIB/$V/bin/pg_config" OPTFLAGS="" -j2 >/dev/null
  make -s -C "$work/src" PG_CONFIG="$LIB/$V/bin/pg_config" install >/dev/null
fi
have_vector || { echo "pgvector did not install for PostgreSQL $V" >&2; exit 1; }
echo "PostgreSQL $V with pgvector installed"

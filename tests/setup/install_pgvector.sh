#!/usr/bin/env bash
# PostgreSQL with the pgvector extension for tests/test_vectordb.py (make test runs this;
# it does nothing when both are there). Debian, as root. Debian 12 has no pgvector
# package: there Debian's own pgvector source package (from Debian 13) is built against
# the installed server.
set -euo pipefail

server_version() { ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1; }
have_vector() {
  local v
  v=$(server_version)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/initdb" ] \
    && [ -f "/usr/share/postgresql/$v/extension/vector.control" ]
}

have_vector && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL with pgvector is missing and installing it needs root (apt-get)" >&2
  exit 1
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
  make -s -C "$work/src" PG_CONFIG="/usr/lib/postgresql/$V/bin/pg_config" OPTFLAGS="" -j2 >/dev/null
  make -s -C "$work/src" PG_CONFIG="/usr/lib/postgresql/$V/bin/pg_config" install >/dev/null
fi
have_vector || { echo "pgvector did not install for PostgreSQL $V" >&2; exit 1; }
echo "PostgreSQL $V with pgvector installed"

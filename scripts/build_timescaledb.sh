#!/usr/bin/env bash
# Build and install TimescaleDB (Apache-2 edition) for PostgreSQL major N from
# Debian 13 (trixie)'s source package, on Debian 12 or 13.
#
#   usage: scripts/build_timescaledb.sh N        (run as root; setup.sh calls it)
#
# The trixie deb-src entry lives in its own sources file with its own lists
# directory and apt cache under $CARGOTRACE_SETUP_DIR (default
# /var/lib/cargotrace-setup), so the system's apt configuration never sees
# trixie and no trixie binary package can be installed by accident.
# Needs: postgresql-server-dev-N, cmake, build-essential (setup.sh installs them).
# It only builds and installs the files; configuring shared_preload_libraries
# and restarting the server is setup.sh's job.
set -euo pipefail

log() { printf 'setup: [timescaledb] %s\n' "$*"; }
die() { printf 'setup: [timescaledb] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 && $1 =~ ^[0-9]+$ ]] || die "usage: $0 POSTGRESQL_MAJOR_VERSION (e.g. 15)"
[[ $EUID -eq 0 ]] || die "must run as root"
PG_MAJOR=$1
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config

STATE_DIR=${CARGOTRACE_SETUP_DIR:-/var/lib/cargotrace-setup}
WORK=$STATE_DIR/timescaledb
APT_DIR=$WORK/apt
DL_DIR=$WORK/download
LOG=$WORK/build-pg$PG_MAJOR.log

[[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found (install postgresql-client-$PG_MAJOR)"
[[ -f /usr/include/postgresql/$PG_MAJOR/server/postgres.h ]] \
  || die "PostgreSQL $PG_MAJOR server headers missing (install postgresql-server-dev-$PG_MAJOR)"
for tool in cmake make cc tar xz; do
  command -v "$tool" >/dev/null || die "'$tool' not found (install cmake build-essential xz-utils)"
done

# Same mirror as the machine's own Debian sources (deb822 *.sources or
# one-line *.list / sources.list); CARGOTRACE_DEBIAN_MIRROR overrides.
detect_mirror() {
  local f uri
  local -a uris=()
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    while read -r uri; do uris+=("$uri"); done < <(
      sed -n 's/^[[:space:]]*URIs:[[:space:]]*//Ip' "$f" | tr -s '[:blank:]' '\n')
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    while read -r uri; do uris+=("$uri"); done < <(
      sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" || $1 == "deb-src" { print $2 }')
  done
  for uri in "${uris[@]}"; do
    uri=${uri%/}
    if [[ $uri =~ ^https?://[^/]+(/.*)?/debian$ ]]; then
      printf '%s\n' "$uri"
      return
    fi
  done
  printf '%s\n' "http://deb.debian.org/debian"
}
MIRROR=${CARGOTRACE_DEBIAN_MIRROR:-$(detect_mirror)}

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$DL_DIR"
SRC_LIST=$APT_DIR/trixie-src.list
printf '# cargotrace scripts/build_timescaledb.sh: source packages only, never used for installs\n' >"$SRC_LIST"
printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' \
  "$MIRROR" >>"$SRC_LIST"
APT_OPTS=(
  -q
  "-oDir::Etc::SourceList=$SRC_LIST"
  "-oDir::Etc::SourceParts=/dev/null"
  "-oDir::State::Lists=$APT_DIR/lists"
  "-oDir::Cache=$APT_DIR/cache"
)
# Let apt's unprivileged download user write where apt-get source saves files.
if id _apt >/dev/null 2>&1; then
  chown _apt:root "$DL_DIR"
fi

log "fetching trixie source index from $MIRROR (isolated: $SRC_LIST)"
: >"$LOG"
apt-get "${APT_OPTS[@]}" update >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "apt-get update (trixie sources) failed; log: $LOG"; }
log "downloading source package timescaledb into $DL_DIR"
(cd "$DL_DIR" && apt-get "${APT_OPTS[@]}" source --download-only timescaledb) >>"$LOG" 2>&1 \
  || { tail -n 20 "$LOG" >&2; die "apt-get source timescaledb failed; log: $LOG"; }

# Newest orig tarball present (apt-get source leaves older ones from earlier runs).
ORIG=$(find "$DL_DIR" -maxdepth 1 -name 'timescaledb_*.orig.tar.*' -printf '%f\n' | sort -V | tail -n 1)
[[ -n $ORIG ]] || die "no timescaledb orig tarball in $DL_DIR"
UPSTREAM_VERSION=${ORIG#timescaledb_}
UPSTREAM_VERSION=${UPSTREAM_VERSION%%.orig.tar.*}
log "source: $ORIG"

SRC_ROOT=$WORK/src-$UPSTREAM_VERSION
rm -rf "$SRC_ROOT"
mkdir -p "$SRC_ROOT"
tar -xf "$DL_DIR/$ORIG" -C "$SRC_ROOT"
SRC=$(find "$SRC_ROOT" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[[ -f $SRC/CMakeLists.txt ]] || die "unexpected tarball layout in $SRC_ROOT"
BUILD=$SRC/build-pg$PG_MAJOR

# Git is not needed: downgrade scripts (the only git user) are off by default
# and GENERATE_DOWNGRADE_SCRIPT=OFF makes that explicit; the tarball has no .git.
log "configuring for PostgreSQL $PG_MAJOR ($PG_CONFIG), Apache-2 only, no telemetry"
cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  "-DPG_CONFIG=$PG_CONFIG" \
  -DAPACHE_ONLY=1 \
  -DSEND_TELEMETRY_DEFAULT=OFF \
  -DUSE_TELEMETRY=OFF \
  -DREGRESS_CHECKS=OFF \
  -DTAP_CHECKS=OFF \
  -DWARNINGS_AS_ERRORS=OFF \
  -DGENERATE_DOWNGRADE_SCRIPT=OFF \
  -DLINTER=OFF \
  >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "cmake configure failed; log: $LOG"; }

JOBS=$(nproc 2>/dev/null || echo 2)
log "compiling (make -j$JOBS)"
make -C "$BUILD" -j"$JOBS" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "build failed; log: $LOG"; }
log "installing into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"
make -C "$BUILD" install >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "make install failed; log: $LOG"; }
# Keep the list of installed files (these are not tracked by dpkg).
if [[ -f $BUILD/install_manifest.txt ]]; then
  cp "$BUILD/install_manifest.txt" "$WORK/installed-files-pg$PG_MAJOR.txt"
fi
log "installed TimescaleDB $UPSTREAM_VERSION for PostgreSQL $PG_MAJOR (file list: $WORK/installed-files-pg$PG_MAJOR.txt)"

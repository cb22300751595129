#!/usr/bin/env bash
# cargotrace machine set-up: idempotent, run as root on Debian 12 (bookworm) or
# Debian 13 (trixie). Re-running it when everything is in place is a quick no-op.
#
#   sudo bash scripts/setup.sh
#
# In order:
#   1. apt: installs what is missing (apt-get update at most once, and only when
#      something has to be installed): mosquitto mosquitto-clients, a PostgreSQL
#      server (Debian's default `postgresql` when none is installed),
#      postgresql-server-dev-N for the server in use, cmake build-essential
#      xz-utils, curl ca-certificates, chromium (browser tests), python3-venv python3-dev (when the venv
#      uses Debian's python3). Makes sure a cluster listens on port 5432 and runs
#      (without systemd: pg_ctlcluster --skip-systemctl-redirect; creates N/main
#      if there is no cluster at all). The system Mosquitto service is never
#      started, stopped or reconfigured.
#   2. TimescaleDB: builds it from trixie's source package
#      (scripts/build_timescaledb.sh) if the server cannot see it, adds it to
#      shared_preload_libraries in conf.d/cargotrace-timescaledb.conf (keeping
#      any other preloaded libraries), restarts the cluster only if the preload
#      list changed, and checks CREATE EXTENSION in a scratch database (once per
#      server/cluster/version/preload state, remembered in $CARGOTRACE_SETUP_DIR).
#   3. Role `cargotrace` (LOGIN SUPERUSER, password `cargotrace`: the development and test role that
#      runs the one-time bootstrap of `cargotrace up` / `cargotrace db bootstrap` and creates test
#      databases) and database `cargotrace`; checks a password login over 127.0.0.1:5432, never
#      resetting a password someone changed (unless CARGOTRACE_SETUP_RESET_PASSWORD=1). The
#      bootstrap creates the least-privilege roles (ingest/db_roles.py; passwords in the state
#      directory); migrations then run as <db>_owner, which is no superuser.
#   4. Python: <repo>/.venv, `pip install -e '.[dev]'` (skipped while the stamp
#      .venv/.installed-<sha256 of pyproject.toml> exists).
#
# Environment: PYTHON (interpreter for a new venv; default python3),
# CARGOTRACE_SETUP_DIR (state/downloads; default /var/lib/cargotrace-setup),
# CARGOTRACE_DEBIAN_MIRROR (mirror for the trixie source package).
set -euo pipefail

T0=$EPOCHREALTIME
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$SCRIPT_DIR")
STATE_DIR=${CARGOTRACE_SETUP_DIR:-/var/lib/cargotrace-setup}
export CARGOTRACE_SETUP_DIR=$STATE_DIR
PGPORT_WANTED=5432
DB_ROLE=cargotrace
DB_NAME=cargotrace
DB_PASSWORD=cargotrace
DB_URL="postgresql://$DB_ROLE:$DB_PASSWORD@127.0.0.1:$PGPORT_WANTED/$DB_NAME"
SCRATCH_DB=cargotrace_setup_check
TS_CONF_NAME=cargotrace-timescaledb.conf
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*"; }
ok() { printf 'setup: ok: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bash $0)"
[[ -f $REPO/pyproject.toml ]] || die "$REPO does not look like the cargotrace repo (no pyproject.toml)"
mkdir -p "$STATE_DIR"
APT_LOG=$STATE_DIR/apt.log

# One set-up at a time on this machine: re-run this script under flock. -o keeps
# the lock out of the children, so a server started below does not inherit it.
if [[ ${CARGOTRACE_SETUP_LOCKED:-} != 1 ]]; then
  export CARGOTRACE_SETUP_LOCKED=1
  lock=$STATE_DIR/setup.lock
  rc=0
  flock -n -o -E 200 "$lock" bash "${BASH_SOURCE[0]}" "$@" || rc=$?
  if ((rc == 200)); then
    log "another setup.sh is running; waiting for it"
    exec flock -o "$lock" bash "${BASH_SOURCE[0]}" "$@"
  fi
  exit "$rc"
fi

OS_ID=unknown OS_VERSION_ID=unknown OS_NAME=unknown
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  OS_ID=$(. /etc/os-release && echo "${ID:-unknown}")
  # shellcheck disable=SC1091
  OS_VERSION_ID=$(. /etc/os-release && echo "${VERSION_ID:-unknown}")
  # shellcheck disable=SC1091
  OS_NAME=$(. /etc/os-release && echo "${PRETTY_NAME:-unknown}")
fi
log "machine: $OS_NAME ($(uname -m)), repo: $REPO"
if [[ $OS_ID != debian || ! $OS_VERSION_ID =~ ^(12|13)$ ]]; then
  log "warning: made for Debian 12/13; carrying on anyway"
fi

# ---------------------------------------------------------------- helpers ---
pkg_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
  [[ $status == "install ok installed" ]]
}

APT_UPDATED=0
apt_install() {  # apt_install PKG... : installs those not installed yet
  local p
  local -a missing=()
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$APT_LOG" 2>&1 \
      || { tail -n 20 "$APT_LOG" >&2; die "apt-get update failed; log: $APT_LOG"; }
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]} (log: $APT_LOG)"
  # C.UTF-8 exists on every Debian; a cluster created by postinst uses it.
  LC_ALL=C.UTF-8 run_clean apt-get -q -y -o DPkg::Lock::Timeout=300 install "${missing[@]}" >>"$APT_LOG" 2>&1 \
    || { tail -n 30 "$APT_LOG" >&2; die "apt-get install failed; log: $APT_LOG"; }
}

# Run a command that may leave a daemon behind (postmaster, services started by
# package scripts) with stdin from /dev/null and none of our other descriptors.
run_clean() {
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec "$@" </dev/null
  )
}

psql_pg() {  # psql as the postgres superuser over the local socket
  (cd / && runuser -u postgres -- env PGOPTIONS='-c client_min_messages=warning' \
    psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT_WANTED" "$@")
}
pg_val() {  # pg_val [DB] SQL : one value, unaligned
  if (($# == 2)); then psql_pg -d "$1" -Atc "$2"; else psql_pg -d postgres -Atc "$1"; fi
}
sql_lit() { printf "'%s'" "${1//\'/\'\'}"; }

wait_for_pg() {
  local i
  for ((i = 0; i < 60; i++)); do
    if psql_pg -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "PostgreSQL on port $PGPORT_WANTED does not accept connections (see /var/log/postgresql/)"
}

# "VER NAME PORT STATUS" of the cluster on port 5432, if any.
cluster_on_port() {
  pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT_WANTED" '$3 == p { print $1, $2, $3, $4; exit }'
}

# Newest PostgreSQL server binary installed (major version), if any.
newest_installed_server() {
  local d v best=""
  for d in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x $d ]] || continue
    v=${d#/usr/lib/postgresql/}
    v=${v%%/*}
    [[ $v =~ ^[0-9]+$ ]] || continue
    if [[ -z $best ]] || ((v > best)); then best=$v; fi
  done
  printf '%s' "$best"
}

normalize_libs() {  # "a, 'b',c" -> "a,b,c" (order kept, duplicates dropped)
  local raw=$1 item out="" seen=","
  local -a items=()
  IFS=',' read -r -a items <<<"$raw"
  for item in "${items[@]}"; do
    item=${item//[[:space:]\"\']/}
    [[ -n $item ]] || continue
    [[ $seen == *",$item,"* ]] && continue
    seen+="$item,"
    out+="${out:+,}$item"
  done
  printf '%s' "$out"
}

# ---------------------------------------------------- 1. system packages ---
log "step 1/4: system packages and PostgreSQL cluster"

# Python: Debian's python3 needs python3-venv (ensurepip) and python3-dev; a
# pyenv/other interpreter does not. Decided by what the venv is (or will be) made from.
VENV=$REPO/.venv
PYTHON=${PYTHON:-python3}
venv_ok() { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }
uses_debian_python=0
if venv_ok; then
  venv_home=$(sed -n 's/^home[[:space:]]*=[[:space:]]*//p' "$VENV/pyvenv.cfg" 2>/dev/null | head -n 1)
  [[ $venv_home == /usr/bin ]] && uses_debian_python=1
else
  py_path=$(command -v "$PYTHON" || true)
  if [[ -z $py_path || $(readlink -f "$py_path") == /usr/bin/* ]]; then uses_debian_python=1; fi
fi

# chromium: the browser the dashboard's end-to-end tests drive (Playwright never downloads its own).
want=(mosquitto mosquitto-clients nats-server cmake build-essential xz-utils curl ca-certificates chromium)
if ((uses_debian_python)); then want+=(python3 python3-venv python3-dev); fi
server_installed=$(newest_installed_server)
if [[ -z $server_installed ]]; then
  log "no PostgreSQL server installed: adding Debian's default 'postgresql'"
  want+=(postgresql)
fi
apt_install "${want[@]}"
ok "packages present: ${want[*]}"

# Mosquitto: only the binaries and the dynamic security plugin are needed; the
# project runs its own broker. The system service is left exactly as it is.
command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || die "mosquitto binary missing"
command -v mosquitto_ctrl >/dev/null || die "mosquitto_ctrl missing"
dynsec=$(compgen -G '/usr/lib/*/mosquitto_dynamic_security.so' | head -n 1 || true)
[[ -n $dynsec ]] || die "mosquitto_dynamic_security.so not found under /usr/lib/*/"
ok "mosquitto $(dpkg-query -W -f='${Version}' mosquitto), mosquitto_ctrl, $dynsec"

# PostgreSQL cluster on port 5432: exists and runs. Without systemd (containers,
# this dev machine) pg_ctlcluster must not redirect to systemctl; with systemd it
# should, so that systemd keeps tracking the cluster's unit.
PG_CTL_OPTS=()
[[ -d /run/systemd/system ]] || PG_CTL_OPTS=(--skip-systemctl-redirect)
cluster=$(cluster_on_port)
if [[ -z $cluster ]]; then
  all_clusters=$(pg_lsclusters -h 2>/dev/null || true)
  if [[ -n $all_clusters ]]; then
    pg_lsclusters >&2
    die "PostgreSQL clusters exist but none uses port $PGPORT_WANTED; move one to $PGPORT_WANTED or create one"
  fi
  server_installed=$(newest_installed_server)
  [[ -n $server_installed ]] || die "no PostgreSQL server binary under /usr/lib/postgresql after install"
  log "no cluster: pg_createcluster $server_installed main --start (port $PGPORT_WANTED, C.UTF-8)"
  LC_ALL=C.UTF-8 run_clean pg_createcluster --locale=C.UTF-8 --port="$PGPORT_WANTED" \
    "$server_installed" main --start >>"$APT_LOG" 2>&1 \
    || { tail -n 20 "$APT_LOG" >&2; die "pg_createcluster failed"; }
  cluster=$(cluster_on_port)
  [[ -n $cluster ]] || die "cluster was created but is not on port $PGPORT_WANTED"
fi
read -r cl_ver cl_name _ cl_status <<<"$cluster"
if [[ $cl_status != online* ]]; then
  log "cluster $cl_ver/$cl_name is $cl_status: starting it"
  run_clean pg_ctlcluster "${PG_CTL_OPTS[@]}" "$cl_ver" "$cl_name" start \
    || die "could not start cluster $cl_ver/$cl_name (see /var/log/postgresql/postgresql-$cl_ver-$cl_name.log)"
fi
wait_for_pg
server_num=$(pg_val 'SHOW server_version_num')
PG_MAJOR=$((server_num / 10000))
((PG_MAJOR == cl_ver)) || die "server on port $PGPORT_WANTED reports version $server_num but pg_lsclusters says $cl_ver"
PG_CONF_DIR=$(dirname -- "$(pg_val 'SHOW config_file')")
ok "PostgreSQL $(pg_val 'SHOW server_version') cluster $cl_ver/$cl_name running on port $PGPORT_WANTED"

apt_install "postgresql-server-dev-$PG_MAJOR"
ok "postgresql-server-dev-$PG_MAJOR present"

# ------------------------------------------------------------ 2. TimescaleDB ---
log "step 2/4: TimescaleDB for PostgreSQL $PG_MAJOR"
ts_q="SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
ts_version=$(pg_val "$ts_q")
ts_changed=0
if [[ -z $ts_version ]]; then
  log "timescaledb is not available to PostgreSQL $PG_MAJOR: building it (scripts/build_timescaledb.sh)"
  bash "$SCRIPT_DIR/build_timescaledb.sh" "$PG_MAJOR"
  ts_version=$(pg_val "$ts_q")
  [[ -n $ts_version ]] || die "timescaledb still not in pg_available_extensions after the build"
  ts_changed=1
fi
ok "timescaledb $ts_version available"

# shared_preload_libraries: what the other config files set (our file excluded),
# plus timescaledb. Another file read after ours would win; that is checked below.
ts_conf=$PG_CONF_DIR/conf.d/$TS_CONF_NAME
spl_source=$(pg_val "SELECT source FROM pg_settings WHERE name = 'shared_preload_libraries'")
case $spl_source in
  default | "configuration file") ;;
  *) die "shared_preload_libraries is set by '$spl_source', which config files cannot override; add timescaledb there" ;;
esac
base_libs=$(pg_val "SELECT setting FROM pg_file_settings
  WHERE name = 'shared_preload_libraries' AND sourcefile IS DISTINCT FROM $(sql_lit "$ts_conf")
    AND error IS NULL ORDER BY seqno DESC LIMIT 1")
want_libs=$(normalize_libs "$base_libs,timescaledb")
running_libs=$(normalize_libs "$(pg_val 'SHOW shared_preload_libraries')")
ts_conf_text="# Managed by cargotrace scripts/setup.sh: preload TimescaleDB (other preloaded
# libraries found in the configuration are kept). Telemetry is off.
shared_preload_libraries = '$want_libs'
timescaledb.telemetry_level = off
"
if [[ ! -f $ts_conf ]] || [[ $(<"$ts_conf")$'\n' != "$ts_conf_text" ]]; then
  log "writing $ts_conf (shared_preload_libraries = '$want_libs')"
  mkdir -p "$(dirname -- "$ts_conf")"
  printf '%s' "$ts_conf_text" >"$ts_conf.tmp"
  chmod 644 "$ts_conf.tmp"
  mv -f "$ts_conf.tmp" "$ts_conf"
  winner=$(pg_val "SELECT sourcefile FROM pg_file_settings
    WHERE name = 'shared_preload_libraries' ORDER BY seqno DESC LIMIT 1")
  [[ $winner == "$ts_conf" ]] \
    || die "$ts_conf is not read (no include_dir 'conf.d'?) or is overridden by ${winner:-?}; add timescaledb there"
  if [[ $running_libs == "$want_libs" ]]; then
    pg_val 'SELECT pg_reload_conf()' >/dev/null
    log "reloaded configuration (preload list unchanged, no restart)"
  fi
  ts_changed=1
else
  ok "$ts_conf up to date"
fi
if [[ $running_libs != "$want_libs" ]]; then
  log "restarting cluster $PG_MAJOR/$cl_name: shared_preload_libraries '$running_libs' -> '$want_libs'"
  run_clean pg_ctlcluster "${PG_CTL_OPTS[@]}" "$PG_MAJOR" "$cl_name" restart \
    || die "restart failed (see /var/log/postgresql/postgresql-$PG_MAJOR-$cl_name.log)"
  wait_for_pg
  running_libs=$(normalize_libs "$(pg_val 'SHOW shared_preload_libraries')")
  [[ $running_libs == "$want_libs" ]] || die "after restart shared_preload_libraries is '$running_libs'"
  ts_changed=1
fi
ok "running server preloads: $running_libs"

# CREATE EXTENSION in a scratch database; remembered in a stamp until something changes.
ts_stamp=$STATE_DIR/timescaledb-verified
ts_state="pg=$server_num cluster=$(pg_val 'SELECT system_identifier FROM pg_control_system()') timescaledb=$ts_version preload=$running_libs"
if ((ts_changed == 0)) && [[ -f $ts_stamp && $(<"$ts_stamp") == "$ts_state" ]]; then
  ok "CREATE EXTENSION timescaledb verified before for this server state ($ts_stamp)"
else
  log "checking CREATE EXTENSION timescaledb in scratch database $SCRATCH_DB"
  drop_scratch="DROP DATABASE IF EXISTS $SCRATCH_DB"
  if ((PG_MAJOR >= 13)); then drop_scratch+=" WITH (FORCE)"; fi
  pg_val "$drop_scratch" >/dev/null
  pg_val "CREATE DATABASE $SCRATCH_DB" >/dev/null
  if ! ext_version=$(psql_pg -d "$SCRATCH_DB" -At -c 'SET client_min_messages = error' \
    -c 'CREATE EXTENSION timescaledb' \
    -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"); then
    pg_val "$drop_scratch" >/dev/null || true
    die "CREATE EXTENSION timescaledb failed"
  fi
  pg_val "$drop_scratch" >/dev/null
  [[ -n $ext_version ]] || die "CREATE EXTENSION timescaledb reported no version"
  printf '%s' "$ts_state" >"$ts_stamp"
  ok "CREATE EXTENSION timescaledb works: version $ext_version"
fi

# ------------------------------------------------------ 3. role and database ---
log "step 3/4: role and database '$DB_NAME'"
role_flags=$(pg_val "SELECT (rolsuper AND rolcanlogin)::text FROM pg_roles WHERE rolname = $(sql_lit "$DB_ROLE")")
if [[ -z $role_flags ]]; then
  log "creating role $DB_ROLE (LOGIN SUPERUSER)"
  psql_pg -d postgres -c "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE $DB_ROLE LOGIN SUPERUSER PASSWORD $(sql_lit "$DB_PASSWORD")"
elif [[ $role_flags != true ]]; then
  log "role $DB_ROLE exists without LOGIN/SUPERUSER: granting them"
  pg_val "ALTER ROLE $DB_ROLE LOGIN SUPERUSER" >/dev/null
fi
ok "role $DB_ROLE (LOGIN SUPERUSER)"
db_owner=$(pg_val "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $(sql_lit "$DB_NAME")")
if [[ -z $db_owner ]]; then
  log "creating database $DB_NAME owned by $DB_ROLE"
  pg_val "CREATE DATABASE $DB_NAME OWNER $DB_ROLE" >/dev/null
elif [[ $db_owner != "$DB_ROLE" ]]; then
  log "database $DB_NAME is owned by $db_owner: giving it to $DB_ROLE"
  pg_val "ALTER DATABASE $DB_NAME OWNER TO $DB_ROLE" >/dev/null
fi
ok "database $DB_NAME owned by $DB_ROLE"

password_login() {  # prints current_user, or the last line of psql's error
  local out rc=0
  out=$(cd / && PGCONNECT_TIMEOUT=5 psql -X -At "$DB_URL" -c 'SELECT current_user' 2>&1) || rc=$?
  printf '%s' "${out##*$'\n'}"
  return "$rc"
}
if login_out=$(password_login) && [[ $login_out == "$DB_ROLE" ]]; then
  ok "password login $DB_ROLE@127.0.0.1:$PGPORT_WANTED/$DB_NAME"
else
  # A wrong password means someone set another one: setup never resets a password on its own.
  if [[ $login_out == *"password authentication failed"* && ${CARGOTRACE_SETUP_RESET_PASSWORD:-0} != 1 ]]; then
    die "password login as $DB_ROLE fails ($login_out): its password was changed and setup never resets it; point CARGOTRACE_DATABASE_URL (and CARGOTRACE_TEST_DATABASE_URL) at the right password, or rerun with CARGOTRACE_SETUP_RESET_PASSWORD=1 to set it back to the development password"
  fi
  log "password login failed ($login_out): setting the password of $DB_ROLE"
  psql_pg -d postgres -c "SET password_encryption = 'scram-sha-256'" \
    -c "ALTER ROLE $DB_ROLE PASSWORD $(sql_lit "$DB_PASSWORD")"
  if ! { login_out=$(password_login) && [[ $login_out == "$DB_ROLE" ]]; }; then
    listen=$(pg_val 'SHOW listen_addresses')
    if [[ $listen != *localhost* && $listen != *127.0.0.1* && $listen != *'*'* ]]; then
      die "server does not listen on 127.0.0.1 (listen_addresses = '$listen'); fix postgresql.conf"
    fi
    hba=$(pg_val 'SHOW hba_file')
    if grep -q '^# cargotrace-setup:' "$hba"; then
      die "password login to $DB_URL fails ($login_out) although $hba already has the cargotrace-setup lines"
    fi
    log "still failing ($login_out): allowing scram-sha-256 logins for $DB_ROLE from loopback in $hba"
    cp -p "$hba" "$hba.cargotrace-setup.bak"
    {
      echo "# cargotrace-setup: password logins for the local dev role over loopback"
      echo "host    all    $DB_ROLE    127.0.0.1/32    scram-sha-256"
      echo "host    all    $DB_ROLE    ::1/128         scram-sha-256"
      cat "$hba.cargotrace-setup.bak"
    } >"$hba.tmp"
    chown --reference="$hba.cargotrace-setup.bak" "$hba.tmp"
    chmod --reference="$hba.cargotrace-setup.bak" "$hba.tmp"
    mv -f "$hba.tmp" "$hba"
    pg_val 'SELECT pg_reload_conf()' >/dev/null
    sleep 1
    if ! { login_out=$(password_login) && [[ $login_out == "$DB_ROLE" ]]; }; then
      die "password login to $DB_URL still fails: $login_out"
    fi
  fi
  ok "password login $DB_ROLE@127.0.0.1:$PGPORT_WANTED/$DB_NAME"
fi

# ---------------------------------------------------------------- 4. Python ---
log "step 4/4: Python virtual environment $VENV"
if ! venv_ok; then
  py_path=$(command -v "$PYTHON" || true)
  [[ -n $py_path ]] || die "no '$PYTHON' interpreter found"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); cargotrace needs Python >= 3.11"
  if [[ -e $VENV ]]; then
    log "$VENV exists but its python does not run: recreating it"
    "$PYTHON" -m venv --clear "$VENV"
  else
    log "creating $VENV with $py_path ($("$PYTHON" -V 2>&1))"
    "$PYTHON" -m venv "$VENV"
  fi
fi
ok "venv python: $("$VENV/bin/python" -V 2>&1)"
pyproject_sha=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
py_stamp=$VENV/.installed-$pyproject_sha
if [[ -f $py_stamp ]]; then
  ok "python dependencies installed for this pyproject.toml (stamp $(basename -- "$py_stamp"))"
else
  pip_log=$STATE_DIR/pip.log
  log "upgrading pip, then pip install -e '.[dev]' (log: $pip_log)"
  : >"$pip_log"
  (cd "$REPO" && "$VENV/bin/python" -m pip install -q --upgrade pip) >>"$pip_log" 2>&1 \
    || { tail -n 20 "$pip_log" >&2; die "pip upgrade failed"; }
  (cd "$REPO" && "$VENV/bin/python" -m pip install -q -e '.[dev]') >>"$pip_log" 2>&1 \
    || { tail -n 30 "$pip_log" >&2; die "pip install -e '.[dev]' failed"; }
  rm -f "$VENV"/.installed-*
  : >"$py_stamp"
  ok "python dependencies installed (stamp $(basename -- "$py_stamp"))"
fi

log "done in $(elapsed): PostgreSQL $PG_MAJOR + TimescaleDB $ts_version on 127.0.0.1:$PGPORT_WANTED, database URL $DB_URL, venv $VENV"

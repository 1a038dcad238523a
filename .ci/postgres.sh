# Sourced by .ci/run: a throw-away PostgreSQL cluster for the state backend's tests, from the
# distribution's packages, run as an unprivileged user on 127.0.0.1 in a temporary directory.
# Exports OTNSX_TEST_POSTGRES (the superuser's URL) and OTNSX_TEST_POSTGRES_PASSWORD_FILE, and
# for the test that restarts a server mid-run (in a cluster of its own) OTNSX_TEST_POSTGRES_BIN
# and OTNSX_TEST_POSTGRES_RUN_AS (the user the servers run as).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
pgbin=$(pg_bin)
# The server refuses to run as root: the package's postgres user runs it (nobody, if not there).
pguser=postgres
id "$pguser" >/dev/null 2>&1 || pguser=nobody
pgroot=$(mktemp -d /tmp/otnsx-pg.XXXXXX)
chmod 755 "$pgroot"
install -d -o "$pguser" -m 700 "$pgroot/data" "$pgroot/socket" "$pgroot/log"
pgpass="$pgroot/superuser.password"
head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$pgpass"
chmod 600 "$pgpass"
install -o "$pguser" -m 600 "$pgpass" "$pgroot/data.pwfile"
as_pg() { setpriv --reuid="$pguser" --regid="$(id -g "$pguser")" --clear-groups -- "$@"; }
as_pg "$pgbin/initdb" -D "$pgroot/data/db" -U postgres --pwfile="$pgroot/data.pwfile" \
  -A scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
rm -f "$pgroot/data.pwfile"
# A free port on loopback.
pgport=
for p in $(seq 54320 54399); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then pgport=$p; break; fi
done
[ -n "$pgport" ] || { echo ".ci/postgres.sh: no free port in 54320-54399" >&2; exit 1; }
cat >> "$pgroot/data/db/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$pgroot/socket'
max_connections = 200
fsync = off
CONF
pg_ctl_() { as_pg "$pgbin/pg_ctl" -D "$pgroot/data/db" -w -l "$pgroot/log/server.log" "$@"; }
pg_ctl_ start >/dev/null
export OTNSX_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pgport/postgres"
export OTNSX_TEST_POSTGRES_PASSWORD_FILE="$pgpass"
export OTNSX_TEST_POSTGRES_BIN="$pgbin"
export OTNSX_TEST_POSTGRES_RUN_AS="$pguser"
pg_stop() { pg_ctl_ stop -m immediate >/dev/null 2>&1 || true; rm -rf "$pgroot"; }
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') for the tests on 127.0.0.1:$pgport (cluster in $pgroot)"

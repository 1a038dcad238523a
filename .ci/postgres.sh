# Sourced by .ci/run: a throw-away PostgreSQL cluster for the state backend's tests, from the
# distribution's packages, run as an unprivileged user on 127.0.0.1 in a temporary directory.
# Exports OTNSX_TEST_POSTGRES (the superuser's URL), OTNSX_TEST_POSTGRES_PASSWORD_FILE and
# OTNSX_TEST_POSTGRES_CTL (pg_ctl for that cluster, to restart it mid-run).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
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
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
cat >> "$pgroot/data/db/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$pgroot/socket'
max_connections = 200
fsync = off
CONF
export OTNSX_TEST_POSTGRES_CTL="setpriv --reuid=$pguser --regid=$(id -g "$pguser") --clear-groups -- $pgbin/pg_ctl -D $pgroot/data/db -w -l $pgroot/log/server.log"
$OTNSX_TEST_POSTGRES_CTL start >/dev/null
export OTNSX_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pgport/postgres"
export OTNSX_TEST_POSTGRES_PASSWORD_FILE="$pgpass"
pg_stop() { $OTNSX_TEST_POSTGRES_CTL stop -m immediate >/dev/null 2>&1 || true; rm -rf "$pgroot"; }
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') for the tests on 127.0.0.1:$pgport (cluster in $pgroot)"

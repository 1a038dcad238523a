# Sourced by .ci/run: a throw-away PostgreSQL cluster for the state backend's tests, from the
# distribution's packages, run as an unprivileged user on 127.0.0.1 in a temporary directory.
# Exports OTNSX_TEST_POSTGRES (the superuser's URL) and OTNSX_TEST_POSTGRES_PASSWORD_FILE, and
# for the test that restarts a server mid-run (in a cluster of its own) OTNSX_TEST_POSTGRES_BIN
# and OTNSX_TEST_POSTGRES_RUN_AS (the user the servers run as).
# Then PgBouncer in transaction mode in front of it (Debian's package, which .ci/run installs),
# for the second pass of the PostgreSQL tests: its address is in $pgbouncer_addr, not exported:
# .ci/run sets OTNSX_TEST_PGBOUNCER to it for that pass only.

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
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') for the tests on 127.0.0.1:$pgport (cluster in $pgroot)"

# PgBouncer with the package's defaults but what a test set-up must say: its own config file
# and port, transaction mode, every database to the server above, SCRAM against a userlist with
# the superuser, and other users (a test makes a role) looked up in the server as the superuser
# (auth_user). It refuses to run as root: the server's user runs it.
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$pgbouncer_bin" ] || { echo ".ci/postgres.sh: no pgbouncer (.ci/run installs Debian's package)" >&2; exit 1; }
bouncer_port=
for p in $(seq 64320 64399); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then bouncer_port=$p; break; fi
done
[ -n "$bouncer_port" ] || { echo ".ci/postgres.sh: no free port in 64320-64399" >&2; exit 1; }
install -d -o "$pguser" -m 700 "$pgroot/bouncer"
cat > "$pgroot/bouncer/pgbouncer.ini" <<CONF
[databases]
* = host=127.0.0.1 port=$pgport

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir = $pgroot/bouncer
pool_mode = transaction
auth_type = scram-sha-256
auth_file = $pgroot/bouncer/userlist.txt
auth_user = postgres
logfile = $pgroot/bouncer/pgbouncer.log
pidfile = $pgroot/bouncer/pgbouncer.pid
CONF
printf '"postgres" "%s"\n' "$(cat "$pgpass")" > "$pgroot/bouncer/userlist.txt"
chown "$pguser" "$pgroot/bouncer/pgbouncer.ini" "$pgroot/bouncer/userlist.txt"
chmod 600 "$pgroot/bouncer/userlist.txt"
as_pg "$pgbouncer_bin" -d "$pgroot/bouncer/pgbouncer.ini"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$bouncer_port") 2>/dev/null && break
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$bouncer_port") 2>/dev/null \
  || { echo ".ci/postgres.sh: pgbouncer did not start:" >&2; cat "$pgroot/bouncer/pgbouncer.log" >&2; exit 1; }
pgbouncer_addr="127.0.0.1:$bouncer_port"
pg_stop() {
  if [ -f "$pgroot/bouncer/pgbouncer.pid" ]; then kill "$(cat "$pgroot/bouncer/pgbouncer.pid")" 2>/dev/null || true; fi
  pg_ctl_ stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$pgroot"
}
echo "$("$pgbouncer_bin" --version | head -n 1) in transaction mode in front of it on $pgbouncer_addr"

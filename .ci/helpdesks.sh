# Sourced by .ci/run (as root, from the project's top directory): two real help desks on
# 127.0.0.1 for the end-to-end tests, stood up by the scripts in ../shared/helpdesks (called
# from here, never copied), with otnsx's help-desk side from dist/helpdesk, and the harness of
# fakes for vCenter and NSX-V (examples/harness.rs) that both help desks' otnsx talk to.
#
#   Znuny 7.0.19  http://127.0.0.1/znuny/       /opt/znuny, OS user znuny, its daemon running,
#                 the OPM built and installed, Generic Agent job "otnsx" (custom module)
#   OTRS 6.0.30   http://127.0.0.1:8080/otrs/   /opt/otrs6, OS user otrs, its daemon running,
#                 Generic Agent job "otnsx" ("Execute Ticket Commands" = otnsx --config ...)
#   Accounts (test passwords): agent1/agent1pw, agent2/agent2pw, root@localhost/rootpw, the API
#   agent otnsx/otnsxpw (ro + note), customer@example.com/custpw; ticket field VMName.
#
# Exports:
#   OTNSX_E2E_BIN            the otnsx both help desks run (a debug build, /usr/local/bin/otnsx)
#   OTNSX_E2E_ZNUNY_URL      http://127.0.0.1/znuny/ (index.pl: agents; nph-genericinterface.pl/
#                            Webservice/GenericTicketConnectorREST: otnsx's web service;
#                            .../Webservice/OtnsxE2E/Ticket: POST, TicketCreate for the tests)
#   OTNSX_E2E_ZNUNY_CONFIG   otnsx's configuration for Znuny (/etc/otnsx-e2e/znuny.toml)
#   OTNSX_E2E_ZNUNY_HOME     /opt/znuny (bin/znuny.Console.pl, run as OTNSX_E2E_ZNUNY_USER=znuny)
#   OTNSX_E2E_OTRS_URL       http://127.0.0.1:8080/otrs/
#   OTNSX_E2E_OTRS_CONFIG    otnsx's configuration for OTRS 6 (/etc/otnsx-e2e/otrs6.toml)
#   OTNSX_E2E_OTRS_HOME      /opt/otrs6 (bin/otrs.Console.pl, run as OTNSX_E2E_OTRS_USER=otrs)
#   OTNSX_E2E_HARNESS        http://127.0.0.1:PORT: GET /tagged (JSON list of the VM ids carrying
#                            otnsx's tag, e.g. ["vm-42"]), GET /changes (NSX's attach/detach calls)
#   OTNSX_E2E_HARNESS_INFO   the harness's KEY=value file: URLs, users and test passwords of the
#                            fake vCenter and NSX, VMS (web01=vm-42,db01=vm-43,app01=vm-44,
#                            vcsa01=vm-48), DENIED_VM (vcsa01), UNKNOWN_VM (web99), PID
# Policy in both configurations: allow web*, db*, app*, vc*; deny vc*, nsx*. So vcsa01 is refused
# by policy (exit 77) and web99, allowed, is not in vCenter (exit 65); `check` warns about nothing.
# Each otnsx configuration's state_dir (/var/lib/otnsx-e2e/{znuny,otrs6}, root:www-data 2770;
# www-data is the primary group of znuny and otrs too) holds journal.jsonl and leases.json.
# helpdesks_stop stops the harness, both daemons, both Apache instances and the PostgreSQL
# cluster 15/main (the help desks' own; the Rust tests' cluster is .ci/postgres.sh's).

hd_dir=../shared/helpdesks
hd_harness_pid=
# Defined first, so that .ci/run's trap can stop what a failed stand-up had started.
helpdesks_stop() {
  if [ -n "$hd_harness_pid" ]; then kill "$hd_harness_pid" 2>/dev/null || true; fi
  runuser -u znuny -- /opt/znuny/bin/znuny.Daemon.pl stop >/dev/null 2>&1 || true
  runuser -u otrs -- /opt/otrs6/bin/otrs.Daemon.pl stop >/dev/null 2>&1 || true
  apache2ctl -k stop >/dev/null 2>&1 || true
  APACHE_CONFDIR=/etc/apache2-otrs6 apache2ctl -k stop >/dev/null 2>&1 || true
  pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
}
hd_etc=/etc/otnsx-e2e
hd_state=/var/lib/otnsx-e2e
hd_bin=/usr/local/bin/otnsx
hd_t0=$EPOCHREALTIME
hd_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
hd_times=()
hd_step() { hd_times+=("$1 $(hd_since "$hd_step_t")s"); hd_step_t=$EPOCHREALTIME; }
hd_step_t=$hd_t0

# An earlier stand-up on this machine (a developer's, or a run killed half-way) may still run:
# its daemons and Apache stopped, and the help desks' users left without processes, so that the
# scripts' --fresh removal can delete them.
helpdesks_stop
if [ -f "$hd_etc/harness.env" ]; then
  hd_old=$(sed -n 's/^PID=//p' "$hd_etc/harness.env")
  [ -n "$hd_old" ] && kill "$hd_old" 2>/dev/null || true
fi
for hd_user in znuny otrs; do
  if id "$hd_user" >/dev/null 2>&1; then
    pkill -u "$hd_user" 2>/dev/null || true
    for _ in $(seq 50); do pgrep -u "$hd_user" >/dev/null || break; sleep 0.1; done
    pkill -KILL -u "$hd_user" 2>/dev/null || true
  fi
done

for f in setup-znuny7.sh setup-otrs6.sh znuny-7.0.19.tar.xz otrs-6.0.30.tar.xz; do
  [ -f "$hd_dir/$f" ] || { echo ".ci/helpdesks.sh: $hd_dir/$f is missing" >&2; exit 1; }
done

# 1. The Debian packages both scripts' headers list (theirs are the same but for the last line).
hd_packages=(apache2 libapache2-mod-perl2 postgresql xz-utils curl
  libdbd-pg-perl libarchive-zip-perl libauthen-sasl-perl libdata-uuid-perl libdatetime-perl
  libdbi-perl libical-parser-perl libmail-imapclient-perl libmoo-perl libnet-dns-perl
  libtemplate-perl libtimedate-perl libwww-perl libxml-libxml-perl libyaml-libyaml-perl
  libapache-dbi-perl libcrypt-eksblowfish-perl libjson-xs-perl libio-socket-ssl-perl
  libtext-csv-xs-perl libxml-libxslt-perl libxml-parser-perl libencode-hanextra-perl
  libnet-ldap-perl libcss-minifier-xs-perl libjavascript-minifier-xs-perl libhash-merge-perl
  libexcel-writer-xlsx-perl libspreadsheet-xlsx-perl libcrypt-jwt-perl libcrypt-openssl-x509-perl
  libapache2-reload-perl libauthen-ntlm-perl libdbd-mysql-perl)
hd_installed=$(dpkg-query -W -f '${db:Status-Abbrev}\n' "${hd_packages[@]}" 2>/dev/null | grep -c '^ii' || true)
if [ "$hd_installed" != "${#hd_packages[@]}" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${hd_packages[@]}" >/dev/null
fi
hd_step apt

# 2. otnsx (a debug build) where both help desks run it, and the harness.
cargo build --locked --quiet --bin otnsx --example harness
install -m 755 "${CARGO_TARGET_DIR:-target}/debug/otnsx" "$hd_bin"
hd_step "cargo build"

# 3. The harness, in its own session so that it keeps no pipe of .ci/run's open.
install -d -m 750 -g www-data "$hd_etc"
rm -f "$hd_etc/harness.env"
setsid "${CARGO_TARGET_DIR:-target}/debug/examples/harness" "$hd_etc/harness.env" \
  >/tmp/otnsx-e2e-harness.log 2>&1 </dev/null &
hd_harness_pid=$!
for _ in $(seq 100); do [ -f "$hd_etc/harness.env" ] && break; sleep 0.1; done
[ -f "$hd_etc/harness.env" ] || { echo ".ci/helpdesks.sh: the harness did not start:" >&2; cat /tmp/otnsx-e2e-harness.log >&2; exit 1; }
hd_harness() { sed -n "s/^$1=//p" "$hd_etc/harness.env"; }

# 4. One otnsx configuration per help desk, readable by www-data and the daemon's user.
hd_secret() { printf '%s\n' "$2" > "$1"; chown root:www-data "$1"; chmod 640 "$1"; }
hd_secret "$hd_etc/vcenter.secret" "$(hd_harness VCENTER_PASSWORD)"
hd_secret "$hd_etc/nsx.secret" "$(hd_harness NSX_PASSWORD)"
hd_secret "$hd_etc/otrs.secret" otnsxpw
hd_config() { # hd_config NAME HELPDESK_BASE_URL
  rm -rf "${hd_state:?}/$1"
  install -d -m 2770 -o root -g www-data "$hd_state" "$hd_state/$1"
  chmod 755 "$hd_state"
  cat > "$hd_etc/$1.toml" <<TOML
# written by .ci/helpdesks.sh for the end-to-end tests
state_dir = "$hd_state/$1"
deadline = "10s"
[otrs]
url = "$2nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
user = "otnsx"
# From a command: the help desk's daemon runs otnsx with SIGCHLD ignored, and waiting for
# this command is what failed there.
password_command = ["/bin/cat", "$hd_etc/otrs.secret"]
vm_field = "VMName"
[vcenter]
url = "$(hd_harness VCENTER_URL)"
user = "$(hd_harness VCENTER_USER)"
password_file = "$hd_etc/vcenter.secret"
api = "auto"
[nsx]
kind = "nsx-v"
url = "$(hd_harness NSX_URL)"
user = "$(hd_harness NSX_USER)"
password_file = "$hd_etc/nsx.secret"
tag = "$(hd_harness NSX_TAG)"
[policy]
max_duration = "8h"
manual_duration = "1h"
allow = ["web*", "db*", "app*", "vc*"]
deny = ["vc*", "nsx*"]
TOML
  chown root:www-data "$hd_etc/$1.toml"
  chmod 640 "$hd_etc/$1.toml"
}
hd_config znuny http://127.0.0.1/znuny/
hd_config otrs6 http://127.0.0.1:8080/otrs/
hd_step harness+configs

# 5. The help desks' PostgreSQL cluster, up before either script runs: both drop their earlier
# database only when the cluster is already up (setup-otrs6.sh then fails on CREATE ROLE, and
# setup-znuny7.sh would keep an earlier run's database under a fresh tree).
if ! pg_lsclusters -h | awk '$1==15 && $2=="main" {print $4}' | grep -q online; then
  hd_conf_d=/etc/postgresql/15/main/conf.d
  [ -f "$hd_conf_d/10-loopback-only.conf" ] || echo "listen_addresses = '127.0.0.1'" > "$hd_conf_d/10-loopback-only.conf"
  pg_ctlcluster 15 main start
fi

# 6. Znuny 7: the script, then the module's command in Kernel/Config.pm (which the script
# writes afresh), then Apache and the daemon (re)started so that both read it.
hd_log=/tmp/otnsx-e2e-setup.log
: > "$hd_log"
if ! bash "$hd_dir/setup-znuny7.sh" --fresh --otnsx-helpdesk dist/helpdesk "$hd_dir/znuny-7.0.19.tar.xz" >>"$hd_log" 2>&1; then
  echo ".ci/helpdesks.sh: setup-znuny7.sh failed:" >&2; tail -n 30 "$hd_log" >&2; exit 1
fi
sed -i "/^    return 1;/i\\    # .ci/helpdesks.sh: the command the Generic Agent module runs\\
    \$Kernel::System::GenericAgent::Otnsx::Command = [ '$hd_bin', '--config', '$hd_etc/znuny.toml' ];" \
  /opt/znuny/Kernel/Config.pm
grep -q "Otnsx::Command = \[ '$hd_bin'" /opt/znuny/Kernel/Config.pm
apache2ctl -k restart
runuser -u znuny -- /opt/znuny/bin/znuny.Daemon.pl start >/dev/null 2>&1 </dev/null
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/znuny/index.pl)" = 200 ] && break
  sleep 0.1
done
hd_step znuny

# 7. OTRS 6: the script, with the job's command and otnsx's web service; then its daemon.
if ! OTRS_TARBALL="$hd_dir/otrs-6.0.30.tar.xz" OTNSX_CMD="$hd_bin --config $hd_etc/otrs6.toml" \
  OTRS_WEBSERVICE=dist/helpdesk/GenericTicketConnectorREST-otnsx.yml \
  bash "$hd_dir/setup-otrs6.sh" >>"$hd_log" 2>&1; then
  echo ".ci/helpdesks.sh: setup-otrs6.sh failed:" >&2; tail -n 30 "$hd_log" >&2; exit 1
fi
# The unlock timeout counts working time only; OTRS 6's default calendar (Mon-Fri 8-20) counts
# none on a weekend, so the unlock-timeout test would find nothing unlocked: a 24/7 calendar,
# as setup-znuny7.sh writes for Znuny (setup-otrs6.sh does not).
if ! grep -q "TimeWorkingHours" /opt/otrs6/Kernel/Config.pm; then
  perl -0pi -e 's/^(    return 1;)/    # .ci\/helpdesks.sh: a 24\/7 working-time calendar for the unlock timeout\n    \$Self->{TimeWorkingHours} = { map { \$_ => [ 0 .. 23 ] } qw(Mon Tue Wed Thu Fri Sat Sun) };\n    \$Self->{TimeVacationDays}        = {};\n    \$Self->{TimeVacationDaysOneTime} = {};\n\n$1/m' /opt/otrs6/Kernel/Config.pm
fi
grep -q "TimeWorkingHours" /opt/otrs6/Kernel/Config.pm
runuser -u otrs -- /opt/otrs6/bin/otrs.Daemon.pl start >/dev/null 2>&1 </dev/null
hd_step otrs6

# 8. The tests' own web service OtnsxE2E (TicketCreate, .ci/e2e-webservice.yml) on both: otnsx's
# shipped web service has no TicketCreate, and should not have one.
install -m 644 .ci/e2e-webservice.yml /tmp/otnsx-e2e-webservice.yml
runuser -u znuny -- /opt/znuny/bin/znuny.Console.pl Admin::WebService::Add --name OtnsxE2E \
  --source-path /tmp/otnsx-e2e-webservice.yml >/dev/null
runuser -u otrs -- /opt/otrs6/bin/otrs.Console.pl Admin::WebService::Add --name OtnsxE2E \
  --source-path /tmp/otnsx-e2e-webservice.yml --no-ansi >/dev/null
rm -f /tmp/otnsx-e2e-webservice.yml
hd_step "web service OtnsxE2E"

export OTNSX_E2E_BIN=$hd_bin
export OTNSX_E2E_ZNUNY_URL=http://127.0.0.1/znuny/
export OTNSX_E2E_ZNUNY_CONFIG=$hd_etc/znuny.toml
export OTNSX_E2E_ZNUNY_HOME=/opt/znuny
export OTNSX_E2E_ZNUNY_USER=znuny
export OTNSX_E2E_OTRS_URL=http://127.0.0.1:8080/otrs/
export OTNSX_E2E_OTRS_CONFIG=$hd_etc/otrs6.toml
export OTNSX_E2E_OTRS_HOME=/opt/otrs6
export OTNSX_E2E_OTRS_USER=otrs
OTNSX_E2E_HARNESS=$(hd_harness STATUS)
export OTNSX_E2E_HARNESS
export OTNSX_E2E_HARNESS_INFO=$hd_etc/harness.env


echo "help desks up in $(hd_since "$hd_t0")s (${hd_times[*]}): Znuny $OTNSX_E2E_ZNUNY_URL, OTRS 6 $OTNSX_E2E_OTRS_URL, harness $OTNSX_E2E_HARNESS; set-up log $hd_log"

#!/bin/bash
# Bring up a small real OpenStack on 127.0.0.1 for the project's tests. Idempotent: what already
# runs is left alone, so a second run is a fast no-op. Needs install.sh to have run once (root,
# Debian 12). Everything lives under one directory: etc/ configs, state/ data, logs/ one log per
# process, run/ PID files; plus clouds.yaml and env.sh.
#
#   up.sh            start what is missing, then print the clouds
#   up.sh --check    exit 0 if the test bed is up with the wanted services, 1 if not; starts nothing
#
# Environment:
#   STACKWAY_TESTBED_DIR       base directory (default /tmp/stackway-testbed)
#   STACKWAY_TESTBED_SERVICES  "all" (default) or a subset of: octavia cinder neutron glance nova.
#                              Keystone, MariaDB and RabbitMQ always run; nova brings glance,
#                              neutron and placement along.
#   STACKWAY_TESTBED_PASSWORD  password of admin and of every service user (default "secret")
#
# Services: Keystone; Octavia (amphora provider with noop amphora/compute/network drivers: load
# balancers reach ACTIVE in ~2 s, VIPs are fake); Cinder (a fake volume driver: API, scheduler and
# attachments are real, block devices are not); Neutron (ML2, no agents, router plugin); Glance
# (file store; Nova needs an image); Nova + Placement (fake virt driver: servers go ACTIVE, nothing
# boots). Octavia's noop *provider* driver is not enabled: its load balancers stay PENDING_CREATE
# and can never be deleted.
#
# Ports (fixed, one test bed per machine): keystone 5000, octavia 9876, cinder 8776, neutron 9696,
# glance 9292, nova 8774, placement 8778, mariadb 3306, rabbitmq 5672 (+ epmd 4369, dist 25672).
set -uo pipefail
S=$(cd "$(dirname "$0")" && pwd)
B=${STACKWAY_TESTBED_DIR:-/tmp/stackway-testbed}
PW=${STACKWAY_TESTBED_PASSWORD:-secret}
ALL="octavia cinder neutron glance nova"
SVCS=${STACKWAY_TESTBED_SERVICES:-all}
[ "$SVCS" = all ] && SVCS=$ALL
for s in $SVCS; do case " $ALL " in *" $s "*) ;; *) echo "up.sh: unknown service '$s' (known: $ALL)" >&2; exit 2;; esac; done
need() { case " $SVCS " in *" $1 "*) case " $SVCS " in *" $2 "*) ;; *) SVCS="$SVCS $2";; esac;; esac; }
need nova glance; need nova neutron
# canonical order, so stamps compare equal whatever order the caller used
SVCS=$(for s in $ALL; do case " $SVCS " in *" $s "*) printf '%s ' $s;; esac; done); SVCS=${SVCS% }

PY=/usr/bin/python3                # Debian's python, where the python3-* service libraries live
E="$PY $S/run_entry.py"
DBURL="mysql+pymysql://os:$PW@127.0.0.1"
RABBIT="rabbit://guest:guest@127.0.0.1:5672/"
L=$B/logs; R=$B/run; ST=$B/state; C=$B/etc

want() { case " $SVCS " in *" $1 "*) return 0;; esac; return 1; }
alive() { [ -f "$R/$1.pid" ] && kill -0 "$(cat "$R/$1.pid")" 2>/dev/null; }
http_ok() { local c; c=$(curl -m 3 -s -o /dev/null -w '%{http_code}' "$1"); [[ $c == 2* || $c == 3* ]]; }
port_busy() { ss -ltn "sport = :$1" | grep -q LISTEN; }

# "Up" = the last complete run covered these services, every process it started is still alive,
# and Keystone answers. The pytest fixture and .ci/run use this to decide whether to call up.sh.
is_up() {
  [ -f "$R/up.done" ] || return 1
  local s; for s in $SVCS; do grep -qw "$s" "$R/up.done" || return 1; done
  local f; for f in "$R"/*.pid; do [ -e "$f" ] || return 1; kill -0 "$(cat "$f")" 2>/dev/null || return 1; done
  http_ok http://127.0.0.1:5000/v3
}
if [ "${1:-}" = --check ]; then is_up; exit; fi

mkdir -p "$L" "$R" "$ST" "$C"
# One up.sh/down.sh at a time: several test sessions may call it at once. The lock's descriptor
# must not leak into the daemons (start() closes it), or they would hold the lock forever.
exec 9>>"$B/.lock"
flock -w 900 9 || { echo "up.sh: another up.sh/down.sh holds $B/.lock" >&2; exit 1; }

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[up %4d.%01ds] %s\n' $((ms/1000)) $((ms%1000/100)) "$*"; }
die() { log "FAILED: $*"; exit 1; }
# start NAME CMD...: in its own session (so down.sh can stop the whole process group), PID in run/
start() { local n=$1; shift; alive "$n" && return 0
  [ -f "$L/$n.log" ] && mv -f "$L/$n.log" "$L/$n.log.1"   # a fresh log per start: wait_log greps it
  setsid "$@" >> "$L/$n.out" 2>&1 < /dev/null 9>&- & echo $! > "$R/$n.pid"; }
wait_http() { local n=$1 url=$2 t=${3:-90} i
  for ((i=0; i<t*5; i++)); do http_ok "$url" && return 0
    alive "$n" || die "$n exited; see $L/$n.log and $L/$n.out"; sleep 0.2; done
  die "$n did not answer $url within ${t}s"; }
wait_log() { local n=$1 f=$2 pat=$3 t=${4:-90} i
  for ((i=0; i<t*5; i++)); do grep -q "$pat" "$f" 2>/dev/null && return 0
    alive "$n" || die "$n exited; see $f"; sleep 0.2; done
  die "$n: no '$pat' in $f within ${t}s"; }

[ -x /usr/sbin/mariadbd ] && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
  && $PY -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
       keystone gunicorn octavia cinder neutron glance nova placement \
  || die "OpenStack packages missing: run $S/install.sh first (as root)"
rm -f "$R/up.done" "$R/keystone-setup.done"

keystone_authtoken() { cat <<EOF
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
auth_url = http://127.0.0.1:5000
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PW
EOF
}
# a [SECTION] that logs in as service user USER (service-to-service calls)
service_auth() { cat <<EOF
[$1]
auth_url = http://127.0.0.1:5000
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $PW
region_name = RegionOne
EOF
}

############################## configs ######################################
write_configs() {
mkdir -p $C/mysql $C/keystone $C/octavia $C/cinder $C/neutron $C/glance $C/nova $C/placement $ST/rabbitmq \
  $ST/keystone/fernet-keys $ST/keystone/credential-keys $ST/octavia/certs $ST/cinder $ST/neutron \
  $ST/glance/images $ST/nova
# MariaDB tuned for throw-away data: no fsync, no binlog, no performance_schema
cat > $C/mysql/my.cnf <<EOF
[mysqld]
datadir = $ST/mysql
socket = $R/mysqld.sock
pid-file = $R/mariadbd.pidfile
bind-address = 127.0.0.1
port = 3306
user = root
log-error = $L/mariadb.log
skip-name-resolve
skip-log-bin
performance_schema = OFF
innodb_buffer_pool_size = 128M
innodb_log_file_size = 48M
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
innodb_flush_method = O_DIRECT_NO_FSYNC
max_connections = 500
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
[client]
socket = $R/mysqld.sock
EOF
echo '[].' > $ST/rabbitmq/enabled_plugins
printf 'listeners.tcp.default = 127.0.0.1:5672\nloopback_users = none\n' > $ST/rabbitmq/rabbitmq.conf

cat > $C/keystone/keystone.conf <<EOF
[DEFAULT]
log_file = $L/keystone.log
[database]
connection = $DBURL/keystone
[token]
provider = fernet
expiration = 14400
[fernet_tokens]
key_repository = $ST/keystone/fernet-keys
[fernet_receipts]
key_repository = $ST/keystone/fernet-keys
[credential]
key_repository = $ST/keystone/credential-keys
[identity]
# the cheapest bcrypt cost (test bed only): every password login and user creation is faster
password_hash_rounds = 4
[cache]
# in-process cache (safe with one gunicorn worker): without it each request runs ~300 SQL queries
enabled = true
backend = dogpile.cache.memory
EOF

# Octavia: the amphora provider with noop drivers, so load balancers really go through the worker
# (RPC over RabbitMQ, taskflow) and reach ACTIVE, and can be deleted. api_base_uri is left unset:
# Octavia then builds links from the request's Host, which keeps a test's fault proxy in the path.
cat > $C/octavia/octavia.conf <<EOF
[DEFAULT]
transport_url = $RABBIT
[api_settings]
bind_host = 127.0.0.1
bind_port = 9876
auth_strategy = keystone
enabled_provider_drivers = amphora:Amphora provider (noop compute/network/amphora drivers)
default_provider_driver = amphora
[database]
connection = $DBURL/octavia
[oslo_messaging]
topic = octavia_prov
[controller_worker]
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
# noop, except that VIP ports are real Neutron ports, so floating IPs can be associated with them
network_driver = testbed_network
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
amp_image_tag = amphora
amp_flavor_id = 1
amp_boot_network_list = 00000000-0000-0000-0000-000000000001
# the worker signs an amphora certificate even with noop drivers: it needs a CA and a client CA
client_ca = $ST/octavia/certs/ca.pem
workers = 1
[task_flow]
jobboard_enabled = false
[certificates]
ca_certificate = $ST/octavia/certs/ca.pem
ca_private_key = $ST/octavia/certs/ca.key
[haproxy_amphora]
server_ca = $ST/octavia/certs/ca.pem
client_cert = $ST/octavia/certs/ca.pem
[health_manager]
bind_ip = 127.0.0.1
controller_ip_port_list = 127.0.0.1:5555
heartbeat_key = insecure
$(keystone_authtoken octavia)
$(service_auth service_auth octavia)
[oslo_concurrency]
lock_path = $ST/octavia/lock
EOF

# Cinder: quotas unlimited, so volumes a failed test leaves behind cannot make later tests fail
cat > $C/cinder/cinder.conf <<EOF
[DEFAULT]
transport_url = $RABBIT
auth_strategy = keystone
api_paste_config = $S/paste/cinder-api-paste.ini
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
my_ip = 127.0.0.1
host = testbed
state_path = $ST/cinder
enabled_backends = fake
quota_volumes = -1
quota_snapshots = -1
quota_gigabytes = -1
quota_backups = -1
quota_backup_gigabytes = -1
[fake]
# plugins/testbed_cinder_driver.py: Cinder's fake driver plus extend and multiattach
volume_driver = testbed_cinder_driver.TestbedFakeDriver
volume_backend_name = fake
[database]
connection = $DBURL/cinder
$(keystone_authtoken cinder)
[oslo_concurrency]
lock_path = $ST/cinder/lock
[coordination]
backend_url = file://$ST/cinder/coord
$(service_auth nova cinder)
interface = public
EOF
# [nova] above: Cinder asks Nova before a non-service user may delete an attachment that names a
# server, and sends it volume-extended events

cat > $C/neutron/neutron.conf <<EOF
[DEFAULT]
transport_url = $RABBIT
auth_strategy = keystone
core_plugin = ml2
service_plugins = router
api_paste_config = $S/paste/neutron-api-paste.ini
bind_host = 127.0.0.1
bind_port = 9696
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
state_path = $ST/neutron
allow_overlapping_ips = true
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
[quotas]
quota_network = -1
quota_subnet = -1
quota_port = -1
quota_router = -1
quota_floatingip = -1
quota_security_group = -1
quota_security_group_rule = -1
[database]
connection = $DBURL/neutron
$(keystone_authtoken neutron)
[oslo_concurrency]
lock_path = $ST/neutron/lock
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
# openvswitch has no agent here and binds nothing; "testbed" (plugins/testbed_neutron_mech.py)
# binds any port that gets a host, so Nova's servers on a network go ACTIVE
mechanism_drivers = openvswitch,testbed
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1:1000
[ml2_type_vlan]
network_vlan_ranges = public:100:200
EOF
mkdir -p $ST/neutron/ep/testbed_ml2-1.0.dist-info
printf 'Metadata-Version: 2.1\nName: testbed-ml2\nVersion: 1.0\n' > $ST/neutron/ep/testbed_ml2-1.0.dist-info/METADATA
printf '[neutron.ml2.mechanism_drivers]\ntestbed = testbed_neutron_mech:TestbedMechanismDriver\n' \
  > $ST/neutron/ep/testbed_ml2-1.0.dist-info/entry_points.txt

cat > $C/glance/glance-api.conf <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 1
enabled_backends = file:file
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $ST/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $ST/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $ST/glance/tasks
[paste_deploy]
flavor = keystone
config_file = $S/paste/glance-api-paste.ini
[database]
connection = $DBURL/glance
$(keystone_authtoken glance)
[oslo_concurrency]
lock_path = $ST/glance/lock
EOF

cat > $C/nova/nova.conf <<EOF
[DEFAULT]
transport_url = $RABBIT
host = testbed-compute
my_ip = 127.0.0.1
state_path = $ST/nova
instances_path = $ST/nova/instances
# no hypervisor: Nova's in-memory fake driver. Servers go ACTIVE, volume attach/detach only record
# the mount, and all of it is forgotten when nova-compute stops.
compute_driver = fake.FakeDriver
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
# nothing sends network-vif-plugged (no agents); the fake driver does not wait for it anyway
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
heal_instance_info_cache_interval = -1
# periodic tasks start at once (the default is a random 0-60 s delay, which delays host discovery)
periodic_fuzzy_delay = 0
[quota]
instances = -1
cores = -1
ram = -1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $S/paste/nova-api-paste.ini
[api_database]
connection = $DBURL/nova_api
[database]
connection = $DBURL/nova
[conductor]
workers = 1
[scheduler]
workers = 1
# map new compute hosts into cell1 by itself (instead of nova-manage cell_v2 discover_hosts)
discover_hosts_in_cells_interval = 2
[vnc]
enabled = false
$(keystone_authtoken nova)
$(service_auth service_user nova)
# Cinder lets Nova delete an attachment that names a server only with a service token
send_service_user_token = true
$(service_auth placement nova)
$(service_auth neutron nova)
$(service_auth cinder nova | sed 's/^region_name/os_region_name/')
[glance]
region_name = RegionOne
[oslo_concurrency]
lock_path = $ST/nova/lock
EOF

cat > $C/placement/placement.conf <<EOF
[DEFAULT]
log_file = $L/placement-api.log
[api]
auth_strategy = keystone
[placement_database]
connection = $DBURL/placement
# migrate on start-up (saves a placement-manage run)
sync_on_startup = true
$(keystone_authtoken placement)
EOF
}
write_configs
log "configs written under $C (services: keystone $SVCS)"

############################## mariadb + rabbitmq ###########################
MY="mariadb --defaults-file=$C/mysql/my.cnf"
if ! mariadb-admin --defaults-file=$C/mysql/my.cnf ping >/dev/null 2>&1; then
  port_busy 3306 && die "port 3306 is taken by another process"
  if [ ! -d $ST/mysql/mysql ]; then
    mariadb-install-db --defaults-file=$C/mysql/my.cnf --auth-root-authentication-method=socket \
      --skip-test-db > $L/mariadb-install.log 2>&1 || die "mariadb-install-db failed (see $L/mariadb-install.log)"
  fi
  start mariadb mariadbd --defaults-file=$C/mysql/my.cnf
fi
# RabbitMQ runs from its own script as root, bound to 127.0.0.1 by environment, data under state/
RE="HOME=$ST/rabbitmq RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=127.0.0.1 \
RABBITMQ_MNESIA_BASE=$ST/rabbitmq/mnesia RABBITMQ_LOG_BASE=$L RABBITMQ_PID_FILE=$R/rabbitmq.pidfile \
RABBITMQ_ENABLED_PLUGINS_FILE=$ST/rabbitmq/enabled_plugins RABBITMQ_CONFIG_FILE=$ST/rabbitmq/rabbitmq"
RABBIT_STARTED=
if ! alive rabbitmq || ! port_busy 5672; then
  alive rabbitmq || { port_busy 5672 && die "port 5672 is taken by another process"; }
  start rabbitmq env $RE /usr/lib/rabbitmq/bin/rabbitmq-server
  RABBIT_STARTED=1
fi
for i in $(seq 1 150); do mariadb-admin --defaults-file=$C/mysql/my.cnf ping >/dev/null 2>&1 && break; sleep 0.2; done
$MY -e "SELECT 1" >/dev/null 2>&1 || die "mariadb not up (see $L/mariadb.log)"
DBS="keystone"; for s in $SVCS; do case $s in nova) DBS="$DBS nova_api nova nova_cell0 placement";; *) DBS="$DBS $s";; esac; done
SQL=""; for d in $DBS; do SQL="$SQL CREATE DATABASE IF NOT EXISTS $d CHARACTER SET utf8mb4;"; done
$MY -e "$SQL CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY '$PW'; GRANT ALL ON *.* TO 'os'@'127.0.0.1';" \
  || die "creating databases failed"
log "mariadb up"

############################## migrate + start, one chain per service #######
# Each chain runs "db sync (skipped once stamped) -> start" in the background, so both cores stay
# busy (the whole run is CPU-bound: every service spends ~3 s of CPU on imports). Workers start
# before their APIs, so that an API never accepts work nobody consumes.
dbsync() { local n=$1; shift; [ -f $ST/$n.dbsynced ] && return 0
  if "$@" > $L/$n-dbsync.log 2>&1; then touch $ST/$n.dbsynced; else echo "$n db sync failed: $L/$n-dbsync.log"; return 1; fi; }
K="keystone-manage --config-file $C/keystone/keystone.conf"
chain_keystone() {
  dbsync keystone $K db_sync || return 1
  if [ ! -f $ST/keystone.bootstrapped ]; then
    # the same keys keystone-manage fernet_setup / credential_setup make (urlsafe base64 of 32
    # random bytes, keys 0 and 1), without two Python start-ups of ~3 s each
    for d in fernet-keys credential-keys; do for k in 0 1; do [ -f $ST/keystone/$d/$k ] || \
      { head -c 32 /dev/urandom | base64 | tr '+/' '-_' > $ST/keystone/$d/$k; chmod 600 $ST/keystone/$d/$k; }; done; done
    $K bootstrap --bootstrap-password "$PW" --bootstrap-region-id RegionOne \
      --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
      --bootstrap-public-url http://127.0.0.1:5000/v3/ >> $L/keystone-bootstrap.log 2>&1 \
      || { echo "keystone bootstrap failed (see $L/keystone-bootstrap.log)"; return 1; }
    touch $ST/keystone.bootstrapped
  fi
  if ! http_ok http://127.0.0.1:5000/v3; then
    port_busy 5000 && { echo "port 5000 is taken by another process"; return 1; }
    # gunicorn gthread, one worker (the in-process cache is per worker); uwsgi's --http-socket
    # reset keystoneauth's reused connections
    OS_KEYSTONE_CONFIG_DIR=$C/keystone start keystone $PY -m gunicorn --chdir $S/wsgi --bind 127.0.0.1:5000 \
      --workers 1 --threads 8 --worker-class gthread --access-logfile $L/keystone-access.log \
      --error-logfile $L/keystone-gunicorn.log keystone_wsgi:application
    ( wait_http keystone http://127.0.0.1:5000/v3 90 ) || return 1
  fi
  log "keystone up"
  # users, roles, catalog, application credential, clouds.yaml; skipped when done for these services
  if [ "$(cat $ST/keystone-setup.stamp 2>/dev/null)" != "$SVCS" ] || [ ! -f $B/clouds.yaml ]; then
    STACKWAY_TESTBED_PASSWORD=$PW $PY $S/keystone_setup.py $B "$(echo $SVCS | tr ' ' ',')" > $L/keystone-setup.log 2>&1 \
      || { echo "keystone_setup.py failed (see $L/keystone-setup.log)"; return 1; }
    echo "$SVCS" > $ST/keystone-setup.stamp
    log "keystone users, catalog, application credential and clouds.yaml ready"
  fi
  touch $R/keystone-setup.done
}
chain_octavia() {
  if [ ! -f $ST/octavia/certs/ca.pem ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout $ST/octavia/certs/ca.key -out $ST/octavia/certs/ca.pem \
      -days 3650 -subj /CN=testbed-octavia-ca > /dev/null 2>&1 || { echo "octavia CA: openssl failed"; return 1; }
  fi
  dbsync octavia octavia-db-manage --config-file $C/octavia/octavia.conf upgrade head || return 1
  # stevedore finds network drivers only by entry point: register plugins/testbed_octavia_network.py
  mkdir -p $ST/octavia/ep/testbed_octavia-1.0.dist-info
  printf 'Metadata-Version: 2.1\nName: testbed-octavia\nVersion: 1.0\n' > $ST/octavia/ep/testbed_octavia-1.0.dist-info/METADATA
  printf '[octavia.network.drivers]\ntestbed_network = testbed_octavia_network:TestbedNetworkDriver\n' \
    > $ST/octavia/ep/testbed_octavia-1.0.dist-info/entry_points.txt
  PYTHONPATH=$S/plugins:$ST/octavia/ep start octavia-worker octavia-worker --config-file $C/octavia/octavia.conf --log-file $L/octavia-worker.log
  http_ok http://127.0.0.1:9876/ || OCTAVIA_CONF=$C/octavia/octavia.conf OCTAVIA_API_LOG=$L/octavia-api.log \
    PYTHONPATH=$S/plugins:$ST/octavia/ep start octavia-api $PY -m gunicorn --chdir $S/wsgi --bind 127.0.0.1:9876 --workers 1 --threads 8 \
    --worker-class gthread --access-logfile $L/octavia-api-access.log --error-logfile $L/octavia-api-gunicorn.log \
    octavia_wsgi:application
}
chain_cinder() {
  dbsync cinder $E cinder.cmd.manage:main cinder-manage --config-file $C/cinder/cinder.conf db sync || return 1
  PYTHONPATH=$S/plugins start cinder-volume $E cinder.cmd.volume:main cinder-volume \
    --config-file $C/cinder/cinder.conf --log-file $L/cinder-volume.log
  start cinder-scheduler $E cinder.cmd.scheduler:main cinder-scheduler \
    --config-file $C/cinder/cinder.conf --log-file $L/cinder-scheduler.log
  http_ok http://127.0.0.1:8776/ || start cinder-api $E cinder.cmd.api:main cinder-api \
    --config-file $C/cinder/cinder.conf --log-file $L/cinder-api.log
}
chain_neutron() {
  dbsync neutron $E neutron.db.migration.cli:main neutron-db-manage --config-file $C/neutron/neutron.conf upgrade heads \
    || return 1
  http_ok http://127.0.0.1:9696/ || PYTHONPATH=$S/plugins:$ST/neutron/ep start neutron-server \
    $E neutron.cmd.eventlet.server:main neutron-server --config-file $C/neutron/neutron.conf --log-file $L/neutron-server.log
}
chain_glance() {
  dbsync glance $E glance.cmd.manage:main glance-manage --config-file $C/glance/glance-api.conf db_sync || return 1
  http_ok http://127.0.0.1:9292/ || start glance-api $E glance.cmd.api:main glance-api \
    --config-file $C/glance/glance-api.conf --log-file $L/glance-api.log
}
chain_nova() {
  # Placement migrates its own database on start-up; nova-compute needs it to register itself
  http_ok http://127.0.0.1:8778/ || OS_PLACEMENT_CONFIG_DIR=$C/placement start placement-api $PY -m gunicorn \
    --chdir $S/wsgi --bind 127.0.0.1:8778 --workers 1 --threads 8 --worker-class gthread --timeout 120 \
    --access-logfile $L/placement-api-access.log --error-logfile $L/placement-api-gunicorn.log placement_wsgi:application
  dbsync nova $PY $S/nova_db_setup.py $C/nova/nova.conf || return 1
  # Nova's services log in to Keystone as they start (conductor and scheduler try their placement
  # client): wait for the nova user and the catalog
  local i; for ((i=0; i<600; i++)); do [ -f $R/keystone-setup.done ] && break; sleep 0.2; done
  [ -f $R/keystone-setup.done ] || { echo "nova: keystone setup not done"; return 1; }
  local n; for n in conductor scheduler; do
    start nova-$n $E nova.cmd.$n:main nova-$n --config-file $C/nova/nova.conf --log-file $L/nova-$n.log; done
  # nova-api runs as nova's eventlet server: importing nova.api.openstack monkey-patches eventlet,
  # which does not mix with gunicorn's threads
  http_ok http://127.0.0.1:8774/ || start nova-api $E nova.cmd.api_os_compute:main nova-api \
    --config-file $C/nova/nova.conf --log-file $L/nova-api.log
  if ! alive nova-compute; then
    ( wait_http placement-api http://127.0.0.1:8778/ 90 ) || return 1
    date -u '+%F %T' > $R/nova-compute.since
    start nova-compute $E nova.cmd.compute:main nova-compute --config-file $C/nova/nova.conf --log-file $L/nova-compute.log
  fi
}
# Keystone gates everything else (every service needs tokens), so the other chains run at nice 10
# while they migrate and start, and are reniced to 0 afterwards.
pids=(); chain_keystone & pids+=($!)
for s in $SVCS; do ( renice -n 10 -p $BASHPID >/dev/null; chain_$s ) & pids+=($!); done
fail=0; for p in "${pids[@]}"; do wait $p || fail=1; done
[ $fail = 0 ] || die "a migrate/start chain failed (messages above, logs in $L)"
for f in $R/*.pid; do p=$(cat $f); kill -0 $p 2>/dev/null && renice -n 0 -g $p >/dev/null 2>&1; done
log "schemas migrated, all processes started"

############################## readiness ####################################
want octavia && { wait_http octavia-api http://127.0.0.1:9876/ 90
                  wait_log octavia-worker $L/octavia-worker.log "Starting V2 consumer" 60; log "octavia up"; }
want cinder  && { wait_http cinder-api http://127.0.0.1:8776/ 90
                  wait_log cinder-volume $L/cinder-volume.log "Driver post RPC initialization completed" 90
                  wait_log cinder-scheduler $L/cinder-scheduler.log "Starting cinder-scheduler node" 60; log "cinder up"; }
want neutron && { wait_http neutron-server http://127.0.0.1:9696/ 120; log "neutron up"; }
want glance  && { wait_http glance-api http://127.0.0.1:9292/ 90; log "glance up"; }
if want nova; then
  wait_http placement-api http://127.0.0.1:8778/ 90
  wait_http nova-api http://127.0.0.1:8774/ 90
  wait_log nova-conductor $L/nova-conductor.log "Starting conductor node" 60
  wait_log nova-scheduler $L/nova-scheduler.log "Starting scheduler node" 60
  # ready to boot once the compute host is mapped into cell1, has inventory in placement, and has
  # reported as up since it was started (its RPC server runs by then)
  since=$(cat $R/nova-compute.since 2>/dev/null || echo 1970-01-01)
  for ((i=0; i<450; i++)); do
    [ "$($MY -N -e "SELECT (SELECT COUNT(*) FROM nova_api.host_mappings WHERE host='testbed-compute')
      * (SELECT COUNT(*) FROM placement.inventories) * (SELECT COUNT(*) FROM nova.services WHERE
      host='testbed-compute' AND \`binary\`='nova-compute' AND deleted=0 AND last_seen_up >= '$since')" 2>/dev/null)" -gt 0 ] \
      2>/dev/null && break
    alive nova-compute || die "nova-compute exited; see $L/nova-compute.log"; sleep 0.2; done
  [ $i -lt 450 ] || die "nova-compute not mapped/in placement within 90s (see $L/nova-compute.log, $L/nova-scheduler.log)"
  log "nova up"
fi
if [ -n "$RABBIT_STARTED" ]; then
  env $RE /usr/lib/rabbitmq/bin/rabbitmqctl -q wait --timeout 60 $R/rabbitmq.pidfile >/dev/null 2>&1 \
    || die "rabbitmq not up (see $L/rabbitmq.out)"
fi

# the objects the project's tests rely on: external network "public", image, flavor, volume type
if [ "$(cat $ST/resources.stamp 2>/dev/null)" != "$SVCS" ]; then
  STACKWAY_TESTBED_PASSWORD=$PW $PY $S/resources_setup.py "$(echo $SVCS | tr ' ' ',')" > $L/resources-setup.log 2>&1 \
    || die "resources_setup.py failed (see $L/resources-setup.log)"
  echo "$SVCS" > $ST/resources.stamp
  log "shared resources ready: $(grep -o '^[a-z]*:' $L/resources-setup.log | tr -d ':' | tr '\n' ' ')"
fi

cat > $B/env.sh <<EOF
export OS_CLIENT_CONFIG_FILE=$B/clouds.yaml
export OS_CLOUD=testbed-admin   # or testbed-appcred
EOF
echo "keystone $SVCS" > $R/up.done
log "ALL UP: keystone $SVCS -- clouds testbed-admin, testbed-appcred in $B/clouds.yaml (source $B/env.sh)"

#!/bin/bash
# Stop everything up.sh started, by the process groups it recorded in run/.
#   down.sh          stop; keep databases and state (the next up.sh skips the migrations)
#   down.sh --purge  stop and delete state, configs, logs and clouds.yaml (the next up.sh starts clean)
# STACKWAY_TESTBED_DIR as for up.sh.
set -uo pipefail
B=${STACKWAY_TESTBED_DIR:-/tmp/stackway-testbed}
R=$B/run
[ -d "$B" ] || { echo "nothing under $B"; exit 0; }
exec 9>>"$B/.lock"
flock -w 900 9 || { echo "down.sh: another up.sh/down.sh holds $B/.lock" >&2; exit 1; }
rm -f "$R/up.done"

# APIs and consumers first (in parallel), then RabbitMQ, then MariaDB
SERVICES="nova-api nova-compute nova-scheduler nova-conductor placement-api glance-api neutron-server
cinder-api cinder-scheduler cinder-volume octavia-api octavia-worker keystone"
stop_group() {  # every process was started with setsid: its PID is its process group's ID
  local n=$1 pid i
  [ -f "$R/$n.pid" ] || return 0
  pid=$(cat "$R/$n.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped $n ($pid)"
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true   # leftover children of the group (API workers)
  rm -f "$R/$n.pid"
}
for n in $SERVICES; do stop_group "$n" & done; wait

if [ -f "$R/rabbitmq.pid" ]; then
  pid=$(cat "$R/rabbitmq.pid")
  if kill -0 "$pid" 2>/dev/null; then
    HOME=$B/state/rabbitmq RABBITMQ_NODENAME=rabbit@localhost timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -q stop \
      >/dev/null 2>&1
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped rabbitmq ($pid)"
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true   # erl_child_setup and friends
  rm -f "$R/rabbitmq.pid"
  # epmd daemonises out of the process group; it exits only when no node is registered
  ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill >/dev/null 2>&1 || true
fi
if [ -f "$R/mariadb.pid" ]; then
  pid=$(cat "$R/mariadb.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped mariadb ($pid)"
  fi
  rm -f "$R/mariadb.pid"
fi
if [ "${1:-}" = --purge ]; then
  rm -rf "$B/state" "$B/etc" "$B/logs" "$B/run" "$B/clouds.yaml" "$B/env.sh"
  echo "purged $B"
fi

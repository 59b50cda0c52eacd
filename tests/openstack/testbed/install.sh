#!/bin/bash
# Install what the OpenStack test bed needs, from Debian 12 (bookworm) packages; run as root.
# A no-op when everything is installed.
#   install.sh          install what is missing
#   install.sh --check  exit 0 if everything is installed, else print what is missing and exit 1
#
# The services are Debian's OpenStack "Zed" (keystone 22, octavia 11, cinder 21, neutron 21,
# glance 25, nova 26, placement 8). Only the python3-* libraries are installed, not the service
# packages (keystone, cinder-api, nova-common, ...): those bring dbconfig/debconf prompts, init
# scripts and daemons started at install time, none of which the test bed wants; up.sh writes its
# own configs and starts each process itself. The client side (openstacksdk) is the project's own
# dependency, in its virtualenv.
set -euo pipefail
PKGS="mariadb-server rabbitmq-server python3-gunicorn python3-pymysql python3-keystone python3-keystoneclient
python3-octavia python3-cinder python3-neutron python3-glance python3-nova python3-placement
curl openssl iproute2 util-linux
e2fsprogs xfsprogs"  # the CSI node tests format, mount and grow real filesystems on loop devices

missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
if [ "${1:-}" = --check ]; then
  [ -z "$missing" ] && exit 0
  echo "missing packages:" $missing
  exit 1
fi
if [ -z "$missing" ]; then
  echo "install.sh: all test bed packages are installed"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root (apt-get install $(echo $missing))" >&2; exit 1; }
echo "install.sh: installing $(echo $missing | wc -w) packages and their dependencies:" $missing
# Keep the packages' maintainer scripts (invoke-rc.d) from starting the system MariaDB and
# RabbitMQ on 3306 and 5672, which up.sh needs for its own instances.
created_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
# refresh the package lists unless they are from the last day
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get update -q
fi
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
echo "install.sh: done"

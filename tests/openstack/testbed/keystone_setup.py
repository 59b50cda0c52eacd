"""Create the test bed's Keystone objects and write clouds.yaml; safe to run again.

Runs with Debian's /usr/bin/python3 (python3-keystoneclient comes with python3-keystone), after
`keystone-manage bootstrap` made the admin user, project and identity endpoint. It adds:
- project "service" with one user per service (admin + service roles there), as the services'
  [keystone_authtoken] and [service_auth] sections expect;
- Octavia's RBAC roles (load-balancer_*), and load-balancer_member for admin;
- a catalog entry (public, internal, admin) per started service;
- application credential "testbed-appcred" of admin, with a fixed secret so that clouds.yaml only
  changes when the database is new (the credential's ID changes then);
- BASE/clouds.yaml with clouds "testbed-admin" (password) and "testbed-appcred".

usage: keystone_setup.py BASE_DIR SERVICE[,SERVICE...]   (password from STACKWAY_TESTBED_PASSWORD)
"""

import os
import sys

import yaml
from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

BASE = sys.argv[1]
WANTED = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else set()
KEYSTONE = "http://127.0.0.1:5000/v3"
PASSWORD = os.environ.get("STACKWAY_TESTBED_PASSWORD", "secret")
APPCRED_NAME = "testbed-appcred"
APPCRED_SECRET = "testbed-appcred-secret"

# catalog name -> (service type, URL); the key of OWNER says which started service brings it
CATALOG = {
    "octavia": ("load-balancer", "http://127.0.0.1:9876"),
    "cinder": ("block-storage", "http://127.0.0.1:8776/v3/%(project_id)s"),
    # Nova's cinder client looks the volume service up as "volumev3"
    "cinderv3": ("volumev3", "http://127.0.0.1:8776/v3/%(project_id)s"),
    "neutron": ("network", "http://127.0.0.1:9696"),
    "glance": ("image", "http://127.0.0.1:9292"),
    "nova": ("compute", "http://127.0.0.1:8774/v2.1"),
    "placement": ("placement", "http://127.0.0.1:8778"),
}
OWNER = {"cinderv3": "cinder", "placement": "nova"}
SERVICE_USERS = ("octavia", "cinder", "neutron", "glance", "nova", "placement")
EXTRA_ROLES = (
    "service",
    "load-balancer_member",
    "load-balancer_admin",
    "load-balancer_observer",
    "load-balancer_global_observer",
    "load-balancer_quota_admin",
)


def wanted(name):
    return OWNER.get(name, name) in WANTED


def first(items):
    return items[0] if items else None


def main():
    auth = v3.Password(
        auth_url=KEYSTONE,
        username="admin",
        password=PASSWORD,
        user_domain_id="default",
        project_name="admin",
        project_domain_id="default",
    )
    ks = client.Client(session=session.Session(auth=auth), interface="public")

    domain = ks.domains.get("default")
    service_project = first(ks.projects.list(name="service", domain=domain)) or ks.projects.create("service", domain)
    admin_project = first(ks.projects.list(name="admin", domain=domain))
    admin = first(ks.users.list(name="admin", domain=domain))
    roles = {r.name: r for r in ks.roles.list()}
    for name in EXTRA_ROLES:
        if name not in roles:
            roles[name] = ks.roles.create(name)

    for name in sorted(filter(wanted, SERVICE_USERS)):
        user = first(ks.users.list(name=name, domain=domain)) or ks.users.create(name, domain=domain, password=PASSWORD)
        ks.roles.grant(roles["admin"], user=user, project=service_project)
        ks.roles.grant(roles["service"], user=user, project=service_project)

    # admin also holds Octavia's member role, so tests can act as a plain load-balancer user too
    ks.roles.grant(roles["load-balancer_member"], user=admin, project=admin_project)

    services = {s.name: s for s in ks.services.list()}
    for name, (service_type, url) in CATALOG.items():
        if not wanted(name):
            continue
        service = services.get(name) or ks.services.create(name, type=service_type)
        have = {e.interface for e in ks.endpoints.list(service=service)}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                ks.endpoints.create(service, url, interface=interface, region="RegionOne")

    existing = [a for a in ks.application_credentials.list(user=admin.id) if a.name == APPCRED_NAME]
    appcred = (
        existing[0]
        if existing
        else ks.application_credentials.create(
            APPCRED_NAME, user=admin.id, secret=APPCRED_SECRET, unrestricted=False, description="test bed"
        )
    )

    common = {"region_name": "RegionOne", "identity_api_version": 3, "interface": "public"}
    clouds = {
        "clouds": {
            "testbed-admin": {
                "auth": {
                    "auth_url": KEYSTONE,
                    "username": "admin",
                    "password": PASSWORD,
                    "project_name": "admin",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                **common,
            },
            "testbed-appcred": {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": KEYSTONE,
                    "application_credential_id": appcred.id,
                    "application_credential_secret": APPCRED_SECRET,
                },
                **common,
            },
        }
    }
    # write-then-rename: a test session may read clouds.yaml while up.sh rewrites it
    path = os.path.join(BASE, "clouds.yaml")
    with open(path + ".tmp", "w") as f:
        yaml.safe_dump(clouds, f, default_flow_style=False)
    os.replace(path + ".tmp", path)
    print("keystone setup done; application credential", appcred.id)


main()

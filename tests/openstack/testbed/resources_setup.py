"""Create the shared objects the project's tests expect in the test bed; safe to run again.

- Neutron: external network "public" (flat, shared, router:external) with subnet "public-subnet"
  (203.0.113.0/24, TEST-NET-3), the pool floating IPs come from; tenant network "private" (shared)
  with "private-subnet" (10.0.0.0/24); router "router1" joining them, so that a floating IP can be
  associated with a port on "private".
- Glance: image "testbed-image" (public; a few bytes, Nova's fake virt driver never reads it).
- Nova: flavor "testbed.tiny" (64 MB, 1 vCPU, 1 GB).
- Cinder: volume type "multiattach" (multiattach='<is> True').

Runs with Debian's /usr/bin/python3 and plain REST through keystoneauth1 (no openstacksdk there).
usage: resources_setup.py SERVICE[,SERVICE...]   (password from STACKWAY_TESTBED_PASSWORD)
"""

import os
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3

WANTED = set(sys.argv[1].split(",")) if len(sys.argv) > 1 else set()
PASSWORD = os.environ.get("STACKWAY_TESTBED_PASSWORD", "secret")

auth = v3.Password(
    auth_url="http://127.0.0.1:5000/v3",
    username="admin",
    password=PASSWORD,
    user_domain_id="default",
    project_name="admin",
    project_domain_id="default",
)
sess = session.Session(auth=auth)


def api(service_type, method, path, **kwargs):
    filt = {"service_type": service_type, "interface": "public", "region_name": "RegionOne"}
    return sess.request(path, method, endpoint_filter=filt, raise_exc=True, **kwargs)


def find(service_type, path, key, name):
    """The object named NAME in list PATH (a neutron-style ?name= filter is applied by the server)."""
    found = [o for o in api(service_type, "GET", path).json()[key] if o.get("name") == name]
    return found[0] if found else None


def ensure(service_type, path, key, body):
    """Find by name or create; KEY is the list key, its singular the object key."""
    one = key[:-1]
    existing = find(service_type, f"{path}?name={body['name']}", key, body["name"])
    if existing:
        return existing
    return api(service_type, "POST", path, json={one: body}).json()[one]


def neutron():
    public = ensure(
        "network",
        "/v2.0/networks",
        "networks",
        {
            "name": "public",
            "router:external": True,
            "shared": True,
            "provider:network_type": "flat",
            "provider:physical_network": "public",
        },
    )
    ensure(
        "network",
        "/v2.0/subnets",
        "subnets",
        {
            "name": "public-subnet",
            "network_id": public["id"],
            "ip_version": 4,
            "cidr": "203.0.113.0/24",
            "gateway_ip": "203.0.113.1",
            "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.250"}],
            "enable_dhcp": False,
        },
    )
    private = ensure("network", "/v2.0/networks", "networks", {"name": "private", "shared": True})
    private_subnet = ensure(
        "network",
        "/v2.0/subnets",
        "subnets",
        {"name": "private-subnet", "network_id": private["id"], "ip_version": 4, "cidr": "10.0.0.0/24"},
    )
    router = ensure(
        "network",
        "/v2.0/routers",
        "routers",
        {"name": "router1", "external_gateway_info": {"network_id": public["id"]}},
    )
    ports = api("network", "GET", f"/v2.0/ports?device_id={router['id']}").json()["ports"]
    if not any(ip["subnet_id"] == private_subnet["id"] for p in ports for ip in p["fixed_ips"]):
        api(
            "network",
            "PUT",
            f"/v2.0/routers/{router['id']}/add_router_interface",
            json={"subnet_id": private_subnet["id"]},
        )
    print("neutron: public/public-subnet, private/private-subnet, router1")


def glance():
    image = find("image", "/v2/images?name=testbed-image", "images", "testbed-image")
    if image is None:
        image = api(
            "image",
            "POST",
            "/v2/images",
            json={"name": "testbed-image", "disk_format": "qcow2", "container_format": "bare", "visibility": "public"},
        ).json()
    if image["status"] == "queued":
        api(
            "image",
            "PUT",
            f"/v2/images/{image['id']}/file",
            data=b"not really a disk image",
            headers={"Content-Type": "application/octet-stream"},
        )
    print("glance: testbed-image", image["id"])


def nova():
    flavors = api("compute", "GET", "/flavors").json()["flavors"]
    if not any(f["name"] == "testbed.tiny" for f in flavors):
        api("compute", "POST", "/flavors", json={"flavor": {"name": "testbed.tiny", "ram": 64, "vcpus": 1, "disk": 1}})
    print("nova: flavor testbed.tiny")


def cinder():
    types = api("volumev3", "GET", "/types").json()["volume_types"]
    if not any(t["name"] == "multiattach" for t in types):
        body = {"name": "multiattach", "extra_specs": {"multiattach": "<is> True"}}
        api("volumev3", "POST", "/types", json={"volume_type": body})
    print("cinder: volume type multiattach")


for name, setup in (("neutron", neutron), ("glance", glance), ("nova", nova), ("cinder", cinder)):
    if name in WANTED:
        setup()

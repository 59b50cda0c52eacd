"""Credentials from clouds.yaml (``--os-cloud`` / ``OS_CLOUD``), as every OpenStack tool reads them."""

from __future__ import annotations

import openstack
from openstack.connection import Connection

from stackway.openstack.clients.calls import translate


def connect(cloud: str | None = None) -> Connection:
    """A Connection for a clouds.yaml entry; the SDK's own retries are off so our backoff is the only one.

    Authentication is lazy in openstacksdk, so a wrong password shows on the first call, translated there.
    """
    try:
        return openstack.connect(cloud=cloud, status_code_retries=0, connect_retries=0)
    except Exception as exc:
        raise translate("identity", "connect", exc) from exc

"""Nova (compute v2.1) behind the narrow interface the CSI controller needs: find a node's server, attach
and detach volumes to it.

Attaching goes through Nova (``os-volume_attachments``), not straight to Cinder's attachments API, because
only Nova can plug the device into the guest; Nova creates and completes the Cinder attachment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from openstack.connection import Connection

from stackway.openstack.clients.calls import api_call

SERVICE = "compute"


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str
    availability_zone: str = ""


@dataclass(frozen=True)
class ServerVolume:
    """One volume attached to a server, as Nova reports it (``device`` is Nova's guess, not the guest's)."""

    server_id: str
    volume_id: str
    device: str = ""
    attachment_id: str = ""


class Compute(Protocol):
    def get_server(self, server_id: str) -> Server: ...
    def attach_volume(self, server_id: str, volume_id: str) -> ServerVolume: ...
    def detach_volume(self, server_id: str, volume_id: str) -> None: ...
    def server_volumes(self, server_id: str) -> list[ServerVolume]: ...


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _server_volume(server_id: str, res: Any) -> ServerVolume:
    return ServerVolume(
        server_id=server_id,
        volume_id=_str(res.volume_id),
        device=_str(res.device),
        attachment_id=_str(res.attachment_id),
    )


class NovaClient:
    """openstacksdk's ``compute`` proxy, one measured call per method."""

    def __init__(self, conn: Connection) -> None:
        self._compute = conn.compute

    def get_server(self, server_id: str) -> Server:
        res = api_call(SERVICE, "server_get", lambda: self._compute.get_server(server_id))
        return Server(
            id=res.id, name=_str(res.name), status=_str(res.status), availability_zone=_str(res.availability_zone)
        )

    def attach_volume(self, server_id: str, volume_id: str) -> ServerVolume:
        """Asks Nova to attach; returns at once (the volume is ``attaching`` until Nova completes it)."""
        res = api_call(
            SERVICE,
            "volume_attachment_create",
            lambda: self._compute.create_volume_attachment(server_id, volume_id),
        )
        return _server_volume(server_id, res)

    def detach_volume(self, server_id: str, volume_id: str) -> None:
        """Asks Nova to detach; raises NotFound when the volume is not attached to that server."""
        api_call(
            SERVICE,
            "volume_attachment_delete",
            lambda: self._compute.delete_volume_attachment(server_id, volume_id, ignore_missing=False),
        )

    def server_volumes(self, server_id: str) -> list[ServerVolume]:
        found = api_call(SERVICE, "volume_attachment_list", lambda: list(self._compute.volume_attachments(server_id)))
        return [_server_volume(server_id, res) for res in found]

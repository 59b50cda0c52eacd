"""ADS server (SotW and Delta) and the snapshot cache it serves from."""

from stackway.xds_server.cache import SnapshotCache
from stackway.xds_server.server import AdsServicer, ServerTls, XdsServer

__all__ = ["AdsServicer", "ServerTls", "SnapshotCache", "XdsServer"]

"""Status conditions exactly as the Gateway API spec names them, and a collector for user-facing problems."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stackway.resources.raw import ObjectKey

CONTROLLER_NAME = "stackway.dev/gateway-controller"

# Condition types
ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
CONFLICTED = "Conflicted"

# Reasons (gateway.networking.k8s.io v1)
R_ACCEPTED = "Accepted"
R_PROGRAMMED = "Programmed"
R_RESOLVED_REFS = "ResolvedRefs"
R_INVALID = "Invalid"
R_INVALID_PARAMETERS = "InvalidParameters"
R_LISTENERS_NOT_VALID = "ListenersNotValid"
R_UNSUPPORTED_ADDRESS = "UnsupportedAddress"
R_NO_CONFLICTS = "NoConflicts"
R_HOSTNAME_CONFLICT = "HostnameConflict"
R_PROTOCOL_CONFLICT = "ProtocolConflict"
R_PORT_UNAVAILABLE = "PortUnavailable"
R_UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
R_INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
R_INVALID_ROUTE_KINDS = "InvalidRouteKinds"
R_REF_NOT_PERMITTED = "RefNotPermitted"
R_NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
R_NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"
R_NO_MATCHING_PARENT = "NoMatchingParent"
R_UNSUPPORTED_VALUE = "UnsupportedValue"
R_INVALID_KIND = "InvalidKind"
R_BACKEND_NOT_FOUND = "BackendNotFound"


def condition(type_: str, ok: bool, reason: str, message: str, generation: int, now: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }


@dataclass(frozen=True)
class Problem:
    """A user mistake found while translating, pointing at the object and field to fix."""

    key: ObjectKey
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.key}: {self.field}: {self.message}" if self.field else f"{self.key}: {self.message}"

"""The errors controllers see: SDK and HTTP failures translated at the client boundary.

Callers decide on retries from ``retryable`` alone, so no controller ever inspects an SDK exception.
"""

from __future__ import annotations


class OpenStackError(Exception):
    """A failed OpenStack API call, named by service and operation."""

    retryable = False

    def __init__(self, service: str, operation: str, message: str, status: int | None = None) -> None:
        self.service = service
        self.operation = operation
        self.status = status
        self.message = message
        code = f" {status}" if status else ""
        super().__init__(f"{service} {operation} failed{code}: {message}")


class NotFound(OpenStackError):
    """404: the resource is gone (callers treat deletes of missing resources as done)."""


class BadRequest(OpenStackError):
    """400/422: the request itself is wrong; repeating it cannot help."""


class Forbidden(OpenStackError):
    """401/403: credentials or policy; repeating it cannot help."""


class QuotaExceeded(OpenStackError):
    """413 or a quota message: needs an operator, not a retry storm."""


class Conflict(OpenStackError):
    """409: usually a resource in PENDING_* (Octavia) or in use; waiting and retrying helps."""

    retryable = True


class ServerError(OpenStackError):
    """5xx: the service failed; retry with backoff."""

    retryable = True


class Unavailable(OpenStackError):
    """Timeouts, refused or reset connections: the service could not be reached; retry with backoff."""

    retryable = True


def error_for_status(service: str, operation: str, status: int | None, message: str) -> OpenStackError:
    """The error class for an HTTP status, so adapters and tests map codes the same way."""
    if status is None:
        return Unavailable(service, operation, message)
    if status == 404:
        return NotFound(service, operation, message, status)
    if status == 409:
        return Conflict(service, operation, message, status)
    if status in (401, 403):
        return Forbidden(service, operation, message, status)
    if status == 413 or "quota" in message.lower():
        return QuotaExceeded(service, operation, message, status)
    if status >= 500:
        return ServerError(service, operation, message, status)
    return BadRequest(service, operation, message, status)

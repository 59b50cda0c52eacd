"""The one place an openstacksdk call is made: measured, and its exceptions translated."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from stackway.openstack.clients import errors
from stackway.openstack.clients.metrics import ERRORS, REQUEST_SECONDS, REQUESTS

T = TypeVar("T")


def translate(service: str, operation: str, exc: BaseException) -> errors.OpenStackError:
    """Map an SDK/keystoneauth exception to our error classes (status code first, then the transport).

    The SDK is imported here, not at module level: `stackway` commands that never talk to OpenStack should
    not pay openstacksdk's import time.
    """
    import keystoneauth1.exceptions as ksa_exc
    from openstack import exceptions as sdk_exc

    if isinstance(exc, errors.OpenStackError):
        return exc
    if isinstance(exc, sdk_exc.HttpException):
        status = exc.status_code
        message = (exc.details or exc.message or str(exc)).strip()
        if isinstance(exc, sdk_exc.ResourceNotFound) and status is None:
            status = 404
        return errors.error_for_status(service, operation, status, message)
    if isinstance(exc, ksa_exc.HttpError):
        return errors.error_for_status(service, operation, exc.http_status, exc.message or str(exc))
    if isinstance(exc, ksa_exc.ConnectionError | ksa_exc.ConnectTimeout | ksa_exc.RetriableConnectionFailure):
        return errors.Unavailable(service, operation, str(exc))
    if isinstance(exc, sdk_exc.ResourceTimeout | TimeoutError | ConnectionError):
        return errors.Unavailable(service, operation, str(exc))
    if isinstance(exc, sdk_exc.SDKException):
        return errors.OpenStackError(service, operation, str(exc))
    raise exc


def api_call(service: str, operation: str, fn: Callable[[], T]) -> T:
    """Run one API call, count and time it, and raise only :class:`errors.OpenStackError` on failure.

    Generators (SDK list calls) must be drained inside ``fn``: paging happens while iterating, and those
    requests belong to this measured call.
    """
    REQUESTS.labels(service, operation).inc()
    started = time.perf_counter()
    try:
        return fn()
    except Exception as exc:
        err = translate(service, operation, exc)
        ERRORS.labels(service, operation, type(err).__name__).inc()
        raise err from exc
    finally:
        REQUEST_SECONDS.labels(service, operation).observe(time.perf_counter() - started)


def call_counts(service: str | None = None) -> dict[tuple[str, str], float]:
    """Calls made so far by (service, operation): benchmarks and tests compare two readings."""
    counts: dict[tuple[str, str], float] = {}
    for metric in REQUESTS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            svc, op = sample.labels["service"], sample.labels["operation"]
            if service is None or svc == service:
                counts[(svc, op)] = sample.value
    return counts

"""gRPC calls through a Gateway and upstream's expectations about them (conformance/utils/grpc).

A call goes over h2c to a Gateway's own loopback address, with the `:authority` and metadata a test case
names, to the echo service of the gRPC echo backends. `compare` is upstream's compareResponse: the status
code must match, and a successful call must have reached the expected method, namespace and pod (by name
prefix). `eventually` is its MakeRequestAndExpectEventuallyConsistentResponse: `threshold` matching calls
in a row before a timeout, because configuration reaches Envoy asynchronously.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from stackway.demo.grpcecho import EchoResponse, call_echo, full_method
from tests.conformance.client import CONSECUTIVE_SUCCESSES, RETRY_DELAY, Target

CALL_TIMEOUT = 10.0
#: Upstream allows 30 s to converge; this machine is shared, so the default is as generous.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class GrpcCase:
    """Upstream's grpc.ExpectedResponse: which method to call with what, and the code or pod that must answer."""

    method: str = "Echo"
    metadata: Mapping[str, str] = field(default_factory=dict)
    authority: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK
    backend: str = ""
    namespace: str = ""

    def describe(self) -> str:
        headers = f" with metadata {dict(self.metadata)}" if self.metadata else ""
        outcome = f"should go to {self.backend}" if self.backend else f"should end {self.code.name}"
        return f"call to '{self.authority}{full_method(self.method)}'{headers} {outcome}"


@dataclass(frozen=True)
class GrpcAnswer:
    """How a call ended: its status code, and the echo when it succeeded."""

    code: grpc.StatusCode
    response: EchoResponse | None = None
    details: str = ""


def channel_to(target: Target, authority: str = "") -> grpc.Channel:
    """An insecure (h2c) channel to the Gateway, with `authority` as `:authority` when given.

    Proxies from the environment are ignored: conformance traffic goes straight to the loopback Gateway.
    """
    options: list[tuple[str, str | int]] = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if authority:
        options.append(("grpc.default_authority", authority))
    return grpc.insecure_channel(f"{target.address}:{target.port}", options=options)


def send_rpc(
    target: Target, case: GrpcCase, channel: grpc.Channel | None = None, timeout: float = CALL_TIMEOUT
) -> GrpcAnswer:
    """One call; on a fresh channel unless one is given (a fresh one never reuses a stale connection)."""
    metadata = [(name.lower(), value) for name, value in case.metadata.items()]  # gRPC metadata keys are lower case
    own = channel is None
    chan = channel if channel is not None else channel_to(target, case.authority)
    try:
        return GrpcAnswer(grpc.StatusCode.OK, call_echo(chan, case.method, metadata, timeout=timeout))
    except grpc.RpcError as exc:
        return GrpcAnswer(exc.code(), details=str(exc.details()))
    finally:
        if own:
            chan.close()


def compare(case: GrpcCase, answer: GrpcAnswer) -> str | None:
    """Upstream's compareResponse: None when the answer meets the case, else what is wrong."""
    if answer.code != case.code:
        return f"expected status {case.code.name}, got {answer.code.name} ({answer.details})"
    if answer.code != grpc.StatusCode.OK:
        return None
    assert answer.response is not None
    assertions = answer.response.assertions
    if assertions.fully_qualified_method != full_method(case.method):
        return f"expected method {full_method(case.method)}, got {assertions.fully_qualified_method}"
    if case.namespace and assertions.context.namespace != case.namespace:
        return f"expected namespace {case.namespace}, got {assertions.context.namespace}"
    if not assertions.context.pod.startswith(case.backend):
        return f"expected a pod of {case.backend!r}, got {assertions.context.pod!r}"
    return None


def eventually(
    target: Target, case: GrpcCase, timeout: float = DEFAULT_TIMEOUT, threshold: int = CONSECUTIVE_SUCCESSES
) -> str | None:
    """None once `threshold` calls in a row meet the case, else the last problem when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    successes, attempts, last = 0, 0, "no call completed"
    while True:
        attempts += 1
        error = compare(case, send_rpc(target, case))
        if error is None:
            successes += 1
            if successes >= threshold:
                return None
            continue
        successes, last = 0, error
        if time.monotonic() + RETRY_DELAY > deadline:
            return f"{case.describe()}: after {attempts} calls in {timeout:.0f}s: {last}"
        time.sleep(RETRY_DELAY)


def check_grpc_cases(target: Target, cases: Sequence[GrpcCase], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Every case concurrently (upstream runs them as parallel subtests); all failures reported at once."""
    with ThreadPoolExecutor(max_workers=min(16, len(cases) or 1)) as pool:
        results = list(pool.map(lambda c: eventually(target, c, timeout=timeout), cases))
    failures = [r for r in results if r is not None]
    assert not failures, f"{len(failures)} of {len(cases)} gRPC cases failed:\n  " + "\n  ".join(failures)

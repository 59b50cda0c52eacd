"""BackendTLSPolicy: TLS from Envoy to a Service's pods, verified against a CA and a hostname.

A policy targets a Service (optionally one named port). Its validation says which CAs to trust (PEM from a
ConfigMap's or Secret's `ca.crt`, or the system's) and which name the backend must present (SNI and SAN).
A policy whose references do not resolve must not weaken security: the backend is then served with no
endpoints (503) rather than over unverified TLS or plaintext. A policy with no usable CA at all is also not
Accepted (NoValidCACertificate), as the API asks; it still holds its target, so that the backend stays closed.

A policy's status has one ancestor per Gateway whose routes send traffic to a Service port it targets, the
ones that lost a conflict included: their Accepted=False/Conflicted is reported where the traffic flows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackway.ir import model as ir
from stackway.resources.core import ServicePort
from stackway.resources.gatewayapi import GROUP, BackendTLSPolicy
from stackway.resources.raw import ObjectKey
from stackway.translate import conditions as c
from stackway.translate.certs import ca_bundle
from stackway.translate.context import Context

R_INVALID_CA_REF = "InvalidCACertificateRef"
R_NO_VALID_CA = "NoValidCACertificate"


@dataclass
class _Policy:
    key: ObjectKey
    spec: BackendTLSPolicy
    tls: ir.UpstreamTLS | None  # None: references did not resolve
    resolved: tuple[bool, str, str]
    accepted: tuple[bool, str, str] = (True, c.R_ACCEPTED, "Policy is accepted")
    ancestors: set[ObjectKey] = field(default_factory=set)


class BackendTLS:
    """The policies of one translation, indexed by the Service port they target."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.by_target: dict[tuple[str, str, str | None], _Policy] = {}
        #: (namespace, Service) → every policy targeting it (winner or not) and the section it names.
        self.by_service: dict[tuple[str, str], list[tuple[_Policy, str | None]]] = {}
        ordered = sorted(
            ctx.resources.backend_tls_policies.items(),
            key=lambda item: (item[1].metadata.creation_timestamp, item[0]),
        )
        self.policies = [self._load(ObjectKey(GROUP, "BackendTLSPolicy", ns, name), p) for (ns, name), p in ordered]

    def _load(self, key: ObjectKey, policy: BackendTLSPolicy) -> _Policy:
        validation = policy.spec.validation
        pems: list[str] = []
        resolved: tuple[bool, str, str] = (True, c.R_RESOLVED_REFS, "All references are resolved")
        for index, ref in enumerate(validation.ca_certificate_refs):
            fld = f"spec.validation.caCertificateRefs[{index}]"
            pem, why = ca_bundle(self.ctx.resources, key.namespace, ref.group, ref.kind, ref.name)
            if why is not None:
                reason = c.R_INVALID_KIND if why.startswith("kind") else R_INVALID_CA_REF
                resolved = (False, reason, why)
                self.ctx.problem(key, fld, why)
            elif pem:
                pems.append(pem)
        if not validation.ca_certificate_refs and validation.well_known_ca_certificates is None:
            resolved = (False, R_INVALID_CA_REF, "no caCertificateRefs and no wellKnownCACertificates")
            self.ctx.problem(key, "spec.validation", resolved[2])
        sans = tuple(
            ("DNS", s.hostname) if s.type == "Hostname" and s.hostname else ("URI", s.uri or "")
            for s in validation.subject_alt_names
        ) or (("DNS", validation.hostname),)
        tls = ir.UpstreamTLS(sni=validation.hostname, ca_pem="".join(pems), subject_alt_names=sans)
        entry = _Policy(key, policy, tls if resolved[0] else None, resolved)
        if validation.ca_certificate_refs and not pems and validation.well_known_ca_certificates is None:
            entry.accepted = (False, R_NO_VALID_CA, "No caCertificateRefs entry is a usable CA certificate")
        for t_index, target in enumerate(policy.spec.target_refs):
            if target.group != "" or target.kind != "Service":
                entry.accepted = (False, c.R_INVALID_KIND, f"targetRefs[{t_index}]: only core Services are supported")
                self.ctx.problem(key, f"spec.targetRefs[{t_index}]", entry.accepted[2])
                continue
            self.by_service.setdefault((key.namespace, target.name), []).append((entry, target.section_name))
            slot = (key.namespace, target.name, target.section_name)
            if slot in self.by_target:
                entry.accepted = (False, "Conflicted", f"{self.by_target[slot].key} already targets this Service port")
                self.ctx.problem(key, f"spec.targetRefs[{t_index}]", entry.accepted[2])
                continue
            self.by_target[slot] = entry
        return entry

    def for_port(self, namespace: str, service: str, port: ServicePort) -> _Policy | None:
        """The policy for a Service port: one naming the port wins over one for the whole Service."""
        return self.by_target.get((namespace, service, port.name or None)) or self.by_target.get(
            (namespace, service, None)
        )

    def note_use(self, service: tuple[str, str, int], gateway: ObjectKey) -> None:
        """A Gateway routes to this Service port: it is an ancestor of every policy targeting the port."""
        namespace, name, number = service
        targeting = self.by_service.get((namespace, name))
        if not targeting:
            return
        svc = self.ctx.resources.services.get((namespace, name))
        port = svc.port(number) if svc is not None else None
        for policy, section in targeting:
            if section is None or (port is not None and port.name == section):
                policy.ancestors.add(gateway)

    def statuses(self) -> dict[ObjectKey, dict[str, Any]]:
        gen_now = self.ctx.options.now
        out: dict[ObjectKey, dict[str, Any]] = {}
        for policy in self.policies:
            gen = policy.spec.metadata.generation
            conditions = [
                c.condition(c.ACCEPTED, policy.accepted[0], policy.accepted[1], policy.accepted[2], gen, gen_now),
                c.condition(c.RESOLVED_REFS, policy.resolved[0], policy.resolved[1], policy.resolved[2], gen, gen_now),
            ]
            out[policy.key] = {
                "ancestors": [
                    {
                        "ancestorRef": {"group": GROUP, "kind": "Gateway", "namespace": a.namespace, "name": a.name},
                        "controllerName": self.ctx.options.controller_name,
                        "conditions": conditions,
                    }
                    for a in sorted(policy.ancestors)
                ]
            }
        return out

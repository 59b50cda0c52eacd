"""networking.k8s.io/v1: Ingress and IngressClass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stackway.resources.base import Model, ObjectMeta

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


class IngressClassSpec(Model):
    controller: str


class IngressClass(Model):
    metadata: ObjectMeta
    spec: IngressClassSpec

    @property
    def is_default(self) -> bool:
        return self.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


class ServiceBackendPort(Model):
    number: int | None = Field(default=None, ge=1, le=65535)
    name: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ServiceBackendPort:
        if (self.number is None) == (self.name is None):
            raise ValueError("exactly one of port.number and port.name must be set")
        return self


class IngressServiceBackend(Model):
    name: str
    port: ServiceBackendPort


class TypedLocalObjectReference(Model):
    api_group: str | None = None
    kind: str
    name: str


class IngressBackend(Model):
    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None

    @model_validator(mode="after")
    def _one_of(self) -> IngressBackend:
        if (self.service is None) == (self.resource is None):
            raise ValueError("exactly one of service and resource must be set")
        return self


class HTTPIngressPath(Model):
    path: str = "/"
    path_type: Literal["Exact", "Prefix", "ImplementationSpecific"]
    backend: IngressBackend


class HTTPIngressRuleValue(Model):
    paths: tuple[HTTPIngressPath, ...] = Field(min_length=1)


class IngressRule(Model):
    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(Model):
    hosts: tuple[str, ...] = ()
    secret_name: str | None = None


class IngressSpec(Model):
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls: tuple[IngressTLS, ...] = ()


class Ingress(Model):
    metadata: ObjectMeta
    spec: IngressSpec = IngressSpec()

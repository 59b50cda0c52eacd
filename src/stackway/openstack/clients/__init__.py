"""One narrow interface per OpenStack service, with an openstacksdk adapter behind each.

Controllers depend on the interfaces (``typing.Protocol``), never on openstacksdk, so planners stay pure and
tests can count calls. Every adapter call goes through :func:`stackway.openstack.clients.calls.api_call`, which
measures it and translates SDK exceptions into :mod:`stackway.openstack.clients.errors`.
"""

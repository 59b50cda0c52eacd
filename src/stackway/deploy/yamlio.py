"""YAML as people review it: multi-line strings (the Envoy bootstrap in its ConfigMap) as literal blocks, and
no anchors or aliases for data that happens to be shared in memory (Envoy's config is read by other tools)."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any, *, sort_keys: bool = False) -> str:
    """One YAML document; key order kept unless `sort_keys`."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=sort_keys, width=120, default_flow_style=False)

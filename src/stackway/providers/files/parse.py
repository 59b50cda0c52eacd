"""Text of one manifest file → plain documents, each with the line it starts on.

Kubernetes reads YAML by converting it to JSON, so everything delivered here is JSON-shaped (string keys;
str, int, float, bool, None, list and dict values). PyYAML's YAML 1.1 resolver is narrowed where it would
turn strings into something else: unquoted timestamps (`kubectl get -o yaml` writes them) would become
`datetime` objects, `1:20` would become the base-60 integer 80, and a lone `=` cannot be loaded at all.
Booleans (`yes`, `on`, ...) and octal integers (`0644`) keep their YAML 1.1 meaning, as Kubernetes' own
YAML reader gives them that meaning too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

#: More nesting than any real manifest has; deeper means a recursive alias or an attempt to exhaust the stack.
MAX_DEPTH = 200
#: Values after expanding aliases. Caps "billion laughs" documents, which are tiny as text and huge as data.
MAX_VALUES = 1_000_000

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_DROPPED_TAGS = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", "tag:yaml.org,2002:yaml"}
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_REPLACED = {"tag:yaml.org,2002:int": _INT, "tag:yaml.org,2002:float": _FLOAT}


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader with the narrowed resolver, noting duplicate mapping keys (YAML silently keeps the last)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, _REPLACED.get(tag, regexp)) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(ident)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Issue:
    """Something wrong inside one document; the document itself still loaded."""

    line: int
    field: str | None
    message: str


@dataclass(frozen=True)
class Document:
    line: int
    data: Any  # plain JSON-shaped value; None for an empty document
    issues: tuple[Issue, ...] = ()
    #: Line of each element of `items` when `data` is a list-kind object (for per-item error lines).
    item_lines: tuple[int, ...] = field(default=())


class SyntaxProblem(Exception):
    """The file as a whole cannot be read; nothing in it can be trusted, so nothing from it is used."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _NotPlain(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def parse_text(text: str, *, json_syntax: bool) -> list[Document]:
    """Parse a whole file, raising SyntaxProblem for anything that makes the file unreadable."""
    if json_syntax:
        return _parse_json(text)
    return _parse_yaml(text)


def _parse_yaml(text: str) -> list[Document]:
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # an empty stream
                continue
            loader.duplicates = []
            value = loader.construct_document(node)
            issues = [
                Issue(line, key, f"duplicate key {key!r}; the last value is used") for line, key in loader.duplicates
            ]
            item_lines: tuple[int, ...] = ()
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == "items" and isinstance(value_node, yaml.SequenceNode):
                        item_lines = tuple(n.start_mark.line + 1 for n in value_node.value)
            docs.append(_document(node.start_mark.line + 1, value, issues, item_lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        raise SyntaxProblem(mark.line + 1 if mark else None, f"invalid YAML: {message}") from exc
    except yaml.YAMLError as exc:
        raise SyntaxProblem(None, f"invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise SyntaxProblem(None, "invalid YAML: nested too deeply") from exc
    finally:
        loader.dispose()
    return docs


def _parse_json(text: str) -> list[Document]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise SyntaxProblem(exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:
        raise SyntaxProblem(None, "invalid JSON: nested too deeply") from exc
    start = len(text) - len(text.lstrip())
    line = text.count("\n", 0, start) + 1
    issues = [Issue(line, key, f"duplicate key {key!r}; the last value is used") for key in duplicates]
    items = value.get("items") if isinstance(value, dict) else None
    item_lines = _json_item_lines(text) if isinstance(items, list) else ()
    if isinstance(items, list) and len(item_lines) != len(items):
        item_lines = ()
    return [_document(line, value, issues, item_lines)]


def _document(line: int, value: Any, issues: list[Issue], item_lines: tuple[int, ...]) -> Document:
    try:
        plain = _plain(value, "", 0, [0])
    except _NotPlain as exc:
        return Document(line, None, (*issues, Issue(line, exc.path or None, exc.message)), item_lines)
    return Document(line, plain, tuple(issues), item_lines)


def _plain(value: Any, path: str, depth: int, count: list[int]) -> Any:
    """A fresh JSON-shaped copy of `value`, so no alias is shared and nothing non-JSON gets through."""
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _NotPlain(path, f"more than {MAX_VALUES} values after expanding aliases")
    if depth > MAX_DEPTH:
        raise _NotPlain(path, f"nested more than {MAX_DEPTH} levels deep (a recursive alias?)")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _key_string(key, path)
            out[name] = _plain(item, f"{path}.{name}" if path else name, depth + 1, count)
        return out
    if isinstance(value, list):
        return [_plain(item, f"{path}[{i}]", depth + 1, count) for i, item in enumerate(value)]
    raise _NotPlain(path, f"a {type(value).__name__} value cannot be part of a Kubernetes object")


def _key_string(key: Any, path: str) -> str:
    """Map keys the way Kubernetes' YAML-to-JSON conversion does: `true: x` has the key "true"."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int | float):
        return str(key)
    raise _NotPlain(path, f"a {type(key).__name__} cannot be a mapping key")


_WS = re.compile(r"[ \t\n\r]*")


def _json_item_lines(text: str) -> tuple[int, ...]:
    """Line of each element of the top-level `items` array; `text` is already known to be valid JSON."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        match = _WS.match(text, i)
        return match.end() if match else i

    i = skip(0)
    if text[i : i + 1] != "{":
        return ()
    i += 1
    found: tuple[int, ...] = ()
    while True:
        i = skip(i)
        if text[i : i + 1] in ("}", ""):
            return found
        key, i = decoder.raw_decode(text, i)
        i = skip(skip(i) + 1)  # past ':'
        if key == "items" and text[i : i + 1] == "[":
            lines: list[int] = []
            line, counted = 1, 0
            i += 1
            while True:
                i = skip(i)
                if text[i : i + 1] in ("]", ""):
                    i += 1
                    break
                line += text.count("\n", counted, i)
                counted = i
                lines.append(line)
                _, i = decoder.raw_decode(text, i)
                i = skip(i)
                if text[i : i + 1] == ",":
                    i += 1
            found = tuple(lines)  # a later duplicate "items" wins, as it does in json.loads
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i)
        if text[i : i + 1] == ",":
            i += 1

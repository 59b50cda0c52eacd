"""Manifest files → keyed objects and problems, without watching anything.

Everything a user can get wrong comes back as a `FileProblem` rather than an exception, because one broken
file or object must never stop the rest of the directory from being served (or validated).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from stackway.providers.files.parse import SyntaxProblem, parse_text
from stackway.resources.raw import ObjectKey, ObjectShapeError, RawObject, Source, key_of

SUFFIXES = (".yaml", ".yml", ".json")
#: Far beyond any real manifest (etcd caps an object at 1.5 MiB); protects the process from a stray dump file.
MAX_FILE_BYTES = 32 * 1024 * 1024
#: How deep `kind: List` may nest inside another List.
_MAX_LIST_DEPTH = 10


@dataclass(frozen=True)
class FileProblem:
    """One thing wrong in a file, pointing at where a user should look."""

    file: str
    line: int | None
    object: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}" if self.line else self.file]
        parts += [p for p in (self.object, self.field) if p]
        return ": ".join([*parts, self.message])


@dataclass(frozen=True)
class FileResult:
    """What one file holds. `parse_ok` is False when the file could not be read as a whole: a watcher then
    keeps what it read from the file last time instead of dropping those objects."""

    file: str
    objects: tuple[RawObject, ...]
    problems: tuple[FileProblem, ...]
    parse_ok: bool


@dataclass(frozen=True)
class DirectoryResult:
    objects: Mapping[ObjectKey, RawObject]
    problems: tuple[FileProblem, ...]
    files: Mapping[str, FileResult] = field(default_factory=dict)


def is_manifest(relative: str) -> bool:
    """Whether a path (relative to the root, '/'-separated) is one we read: no part of it may be hidden."""
    parts = relative.split("/")
    return relative.endswith(SUFFIXES) and not any(p.startswith(".") for p in parts)


def manifest_files(root: Path) -> Iterator[str]:
    """Relative '/'-separated paths of every manifest under root, in sorted order; hidden directories pruned."""
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(directory).relative_to(root)
        for name in files:
            relative = (base / name).as_posix()
            if is_manifest(relative):
                found.append(relative)
    return iter(sorted(found))


def load_file(path: Path | str, root: Path | str) -> FileResult:
    """Read and parse one file; `path` may be absolute or relative to `root`."""
    return read_file(path, root)[0]


def read_file(path: Path | str, root: Path | str) -> tuple[FileResult, bytes]:
    """load_file that also returns the bytes it read, so a watcher can tell a same-content save apart."""
    relative, data, failed = read_bytes(path, root)
    return (failed if failed is not None else parse_file(relative, data)), data


def read_bytes(path: Path | str, root: Path | str) -> tuple[str, bytes, FileResult | None]:
    """(name relative to root, bytes, None), or a FileResult saying why the file could not be read: parsing
    is left to the caller, which may find the bytes are the ones it parsed last time."""
    root = Path(root)
    full = root / path
    try:
        relative = full.relative_to(root).as_posix()
    except ValueError:  # an absolute path outside root: name it as given
        relative = full.as_posix()
    try:
        with open(full, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return relative, b"", _failed(relative, None, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return relative, data, _failed(relative, None, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not read")
    return relative, data, None


def parse_file(relative: str, data: bytes) -> FileResult:
    """Parse a file's bytes; split from load_file so callers that already read them do not read twice."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _failed(relative, data.count(b"\n", 0, exc.start) + 1, "not UTF-8 text")
    try:
        documents = parse_text(text, json_syntax=relative.endswith(".json"))
    except SyntaxProblem as exc:
        return _failed(relative, exc.line, exc.message)
    objects: list[RawObject] = []
    problems: list[FileProblem] = []
    for doc in documents:
        for issue in doc.issues:
            problems.append(FileProblem(relative, issue.line, _describe(doc.data), issue.field, issue.message))
        if doc.data is not None:
            _collect(relative, doc.line, doc.data, doc.item_lines, objects, problems, 0)
    return FileResult(relative, tuple(objects), tuple(problems), parse_ok=True)


def _failed(relative: str, line: int | None, message: str) -> FileResult:
    return FileResult(relative, (), (FileProblem(relative, line, None, None, message),), parse_ok=False)


def _collect(
    relative: str,
    line: int,
    data: Any,
    item_lines: tuple[int, ...],
    objects: list[RawObject],
    problems: list[FileProblem],
    depth: int,
) -> None:
    if not isinstance(data, dict):
        problems.append(
            FileProblem(relative, line, None, None, f"expected an object (a mapping), found {_type_name(data)}")
        )
        return
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        if depth >= _MAX_LIST_DEPTH:
            problems.append(FileProblem(relative, line, kind, "items", "Lists nested too deeply"))
            return
        for index, item in enumerate(data["items"]):
            item_line = item_lines[index] if index < len(item_lines) else line
            _collect(relative, item_line, item, (), objects, problems, depth + 1)
        return
    try:
        key = key_of(data)
    except ObjectShapeError as exc:
        problems.append(FileProblem(relative, line, _describe(data), exc.field, exc.message))
        return
    objects.append(RawObject(key, data, Source(relative, line)))


def _describe(data: Any) -> str | None:
    """A name for an object that may be too broken to key, for error messages."""
    if not isinstance(data, dict):
        return None
    kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None
    if kind and name:
        return f"{kind} {name}"
    return kind or name


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(
        type(value), type(value).__name__
    )


def merge(results: Iterable[tuple[str, Iterable[RawObject], Iterable[FileProblem]]]) -> DirectoryResult:
    """Combine per-file objects into one keyed view. The same key twice is a problem: the object from the
    first file in path order (then the earlier document) is served, so the outcome never depends on the
    order in which files were read or changed."""
    objects: dict[ObjectKey, RawObject] = {}
    problems: list[FileProblem] = []
    for file, file_objects, file_problems in sorted(results, key=lambda r: r[0]):
        problems.extend(file_problems)
        for obj in file_objects:
            first = objects.get(obj.key)
            if first is None:
                objects[obj.key] = obj
                continue
            line = obj.source.line if obj.source else None
            problems.append(FileProblem(file, line, str(obj.key), None, f"duplicate object; {first.source} is used"))
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return DirectoryResult(MappingProxyType(objects), tuple(problems))


def load_directory(root: Path | str) -> DirectoryResult:
    """Load every manifest under root (what `stackway validate` and the watcher's first read use)."""
    root = Path(root)
    if not root.is_dir():
        return DirectoryResult({}, (FileProblem(str(root), None, None, None, "not a directory"),))
    results = {rel: load_file(rel, root) for rel in manifest_files(root)}
    merged = merge((r.file, r.objects, r.problems) for r in results.values())
    return DirectoryResult(merged.objects, merged.problems, MappingProxyType(results))

"""Loader rules: what a directory of manifests turns into, and how every user mistake is reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stackway.providers.files import FileProblem, load_directory, load_file
from stackway.providers.files.identity import GenerationTracker, uid_for
from stackway.providers.files.loader import MAX_FILE_BYTES
from stackway.resources.raw import ObjectKey, RawObject, Source, key_of


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def secret(name: str, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}{ns}}}\n"


SECRET = ObjectKey("", "Secret", "default", "a")


def test_single_object_is_keyed_with_its_source(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "# leading comment\n\n" + secret("a"))
    result = load_directory(tmp_path)
    assert result.problems == ()
    assert list(result.objects) == [SECRET]
    obj = result.objects[SECRET]
    assert obj.source == Source("a.yaml", 3)
    assert obj.body == {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}


def test_multi_document_yaml_lines_and_empty_documents(tmp_path: Path) -> None:
    text = "---\n" + secret("a") + "---\n---\n# only a comment\n---\n" + secret("b", "team")
    write(tmp_path, "multi.yaml", text)
    result = load_directory(tmp_path)
    assert result.problems == ()
    sources = {k.name: v.source for k, v in result.objects.items()}
    assert sources == {"a": Source("multi.yaml", 2), "b": Source("multi.yaml", 9)}
    assert ObjectKey("", "Secret", "team", "b") in result.objects


def test_recursive_over_yaml_yml_and_json_only(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", secret("one"))
    write(tmp_path, "deep/er/two.yml", secret("two"))
    write(tmp_path, "three.json", json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "three"}}))
    write(tmp_path, "notes.txt", secret("txt"))
    write(tmp_path, "upper.YAML", secret("upper"))
    result = load_directory(tmp_path)
    assert sorted(k.name for k in result.objects) == ["one", "three", "two"]
    assert result.objects[ObjectKey("", "Secret", "default", "two")].source == Source("deep/er/two.yml", 1)
    assert sorted(result.files) == ["deep/er/two.yml", "one.yaml", "three.json"]


def test_dotfiles_and_dot_directories_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, ".a.yaml.tmp", secret("tmp"))
    write(tmp_path, ".hidden.yaml", "{ broken")
    write(tmp_path, ".git/x.yaml", secret("git"))
    write(tmp_path, "sub/..data/y.yaml", secret("configmap-internal"))
    write(tmp_path, "visible.yaml", secret("visible"))
    result = load_directory(tmp_path)
    assert [k.name for k in result.objects] == ["visible"]
    assert result.problems == ()


def test_malformed_yaml_reports_the_line_and_fails_the_file(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", secret("a") + "spec:\n  ports: [80\n  other: x\n")
    result = load_file("bad.yaml", tmp_path)
    assert not result.parse_ok
    assert result.objects == ()
    (problem,) = result.problems
    assert problem.file == "bad.yaml"
    assert problem.line == 6
    assert "invalid YAML" in problem.message


def test_syntax_error_in_a_later_document_fails_the_whole_file(tmp_path: Path) -> None:
    write(tmp_path, "two.yaml", secret("a") + "---\nkind: [\n")
    result = load_file(tmp_path / "two.yaml", tmp_path)
    assert not result.parse_ok
    assert result.objects == ()
    assert result.problems[0].line == 6


def test_malformed_json_reports_the_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.json", '{\n  "apiVersion": "v1",\n  "kind": "Secret"\n  "metadata": {}\n}\n')
    result = load_file("bad.json", tmp_path)
    assert not result.parse_ok
    assert result.problems[0].line == 4
    assert "invalid JSON" in result.problems[0].message


def test_not_utf8_fails_the_file_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(secret("a").encode() + b"data: caf\xe9\n")
    result = load_file("latin1.yaml", tmp_path)
    assert not result.parse_ok
    assert result.problems == (FileProblem("latin1.yaml", 4, None, None, "not UTF-8 text"),)


def test_a_document_that_is_not_a_mapping_is_a_problem_but_others_load(tmp_path: Path) -> None:
    write(tmp_path, "mixed.yaml", "- just\n- a list\n---\nhello\n---\n" + secret("a"))
    result = load_file("mixed.yaml", tmp_path)
    assert result.parse_ok
    assert [o.key for o in result.objects] == [SECRET]
    assert [(p.line, p.message) for p in result.problems] == [
        (1, "expected an object (a mapping), found a list"),
        (4, "expected an object (a mapping), found a string"),
    ]


@pytest.mark.parametrize(
    ("text", "field", "obj"),
    [
        ("kind: Secret\nmetadata: {name: a}\n", "apiVersion", "Secret a"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "kind", "a"),
        ("apiVersion: v1\nkind: Secret\n", "metadata", "Secret"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {namespace: x}\n", "metadata.name", "Secret"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: 3}\n", "metadata.namespace", "Secret a"),
    ],
)
def test_missing_identity_fields_are_named(tmp_path: Path, text: str, field: str, obj: str) -> None:
    write(tmp_path, "x.yaml", "# c\n" + text)
    result = load_directory(tmp_path)
    assert result.objects == {}
    (problem,) = result.problems
    assert (problem.file, problem.line, problem.object, problem.field) == ("x.yaml", 2, obj, field)


def test_list_kind_yields_items_with_their_own_lines(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Secret\n  metadata: {name: a}\n"
        "- kind: Secret\n  metadata: {name: noversion}\n"
        "- apiVersion: v1\n  kind: SecretList\n  items:\n  - {apiVersion: v1, kind: Secret, metadata: {name: n}}\n"
    )
    write(tmp_path, "list.yaml", text)
    result = load_directory(tmp_path)
    assert {k.name: v.source.line for k, v in result.objects.items() if v.source} == {"a": 4, "n": 9}
    (problem,) = result.problems
    assert (problem.line, problem.field) == (7, "apiVersion")


def test_json_single_object_and_list(tmp_path: Path) -> None:
    write(tmp_path, "one.json", '\n\n{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}')
    items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}} for n in ("b", "c")]
    write(tmp_path, "list.json", json.dumps({"kind": "List", "apiVersion": "v1", "items": items}, indent=2))
    result = load_directory(tmp_path)
    assert result.problems == ()
    lines = {k.name: (v.source.file, v.source.line) for k, v in result.objects.items() if v.source}
    assert lines == {"a": ("one.json", 3), "b": ("list.json", 5), "c": ("list.json", 12)}


def test_duplicates_across_files_first_by_path_wins(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", secret("a") + "data: {from: b}\n")
    write(tmp_path, "a.yaml", "\n" + secret("a") + "data: {from: a}\n")
    result = load_directory(tmp_path)
    assert result.objects[SECRET].body["data"] == {"from": "a"}
    (problem,) = result.problems
    assert problem == FileProblem("b.yaml", 1, "Secret default/a", None, "duplicate object; a.yaml:2 is used")


def test_duplicate_within_a_file_keeps_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("a") + "data: {n: '1'}\n---\n" + secret("a") + "data: {n: '2'}\n")
    result = load_directory(tmp_path)
    assert result.objects[SECRET].body["data"] == {"n": "1"}
    assert [(p.line, p.object) for p in result.problems] == [(6, "Secret default/a")]


def test_namespace_default_and_cluster_scoped(tmp_path: Path) -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c, namespace: ignored}\n"
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
    )
    write(tmp_path, "gw.yaml", text)
    keys = set(load_directory(tmp_path).objects)
    group = "gateway.networking.k8s.io"
    assert keys == {ObjectKey(group, "GatewayClass", "", "c"), ObjectKey(group, "Gateway", "default", "g")}


def test_yaml_11_scalars_that_must_stay_strings(tmp_path: Path) -> None:
    text = secret("a") + (
        "data:\n"
        "  when: 2024-01-01T00:00:00Z\n"
        "  day: 2024-01-01\n"
        "  clock: 12:30\n"
        "  equals: =\n"
        "  quoted: 'yes'\n"
        "  sci: 1e3\n"
    )
    write(tmp_path, "a.yaml", text)
    data = load_directory(tmp_path).objects[SECRET].body["data"]
    assert data == {
        "when": "2024-01-01T00:00:00Z",
        "day": "2024-01-01",
        "clock": "12:30",
        "equals": "=",
        "quoted": "yes",
        "sci": "1e3",
    }


def test_yaml_11_booleans_octals_and_keys_as_kubernetes_reads_them(tmp_path: Path) -> None:
    text = secret("a") + "spec:\n  enabled: yes\n  mode: 0644\n  port: 8080\n  ratio: 0.5\n  on: off\n  80: http\n"
    write(tmp_path, "a.yaml", text)
    spec = load_directory(tmp_path).objects[SECRET].body["spec"]
    assert spec == {"enabled": True, "mode": 420, "port": 8080, "ratio": 0.5, "true": False, "80": "http"}


def test_duplicate_mapping_key_is_reported_and_last_value_kept(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("a") + "data:\n  k: '1'\n  k: '2'\n")
    result = load_directory(tmp_path)
    assert result.objects[SECRET].body["data"] == {"k": "2"}
    (problem,) = result.problems
    assert (problem.line, problem.object, problem.field) == (6, "Secret a", "k")


def test_aliases_are_expanded_into_independent_copies(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("a") + "data:\n  x: &v {k: v}\n  y: *v\n")
    data = load_directory(tmp_path).objects[SECRET].body["data"]
    assert data == {"x": {"k": "v"}, "y": {"k": "v"}}
    assert data["x"] is not data["y"]


def test_alias_bomb_and_recursive_alias_are_problems_not_hangs(tmp_path: Path) -> None:
    bomb = ["a: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 9)]
    write(tmp_path, "bomb.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: bomb}\ndata:\n  " + "\n  ".join(bomb))
    write(tmp_path, "loop.yaml", secret("loop") + "data: &l\n  self: *l\n")
    write(tmp_path, "ok.yaml", secret("a"))
    result = load_directory(tmp_path)
    assert list(result.objects) == [SECRET]
    messages = {p.file: p.message for p in result.problems}
    assert "more than" in messages["bomb.yaml"]
    assert "nested more than" in messages["loop.yaml"]


def test_explicit_non_json_tags_are_problems(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("a") + "data:\n  blob: !!binary aGVsbG8=\n")
    result = load_directory(tmp_path)
    assert result.objects == {}
    (problem,) = result.problems
    assert (problem.field, problem.message) == ("data.blob", "a bytes value cannot be part of a Kubernetes object")


def test_unknown_tag_fails_the_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("a") + "data: !Ref x\n")
    result = load_file("a.yaml", tmp_path)
    assert not result.parse_ok
    assert result.problems[0].line == 4


def test_unreadable_and_oversized_files_are_problems(tmp_path: Path) -> None:
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing")
    with open(tmp_path / "huge.yaml", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    write(tmp_path, "ok.yaml", secret("a"))
    result = load_directory(tmp_path)
    assert list(result.objects) == [SECRET]
    assert {p.file: p.line for p in result.problems} == {"dangling.yaml": None, "huge.yaml": None}
    assert not result.files["huge.yaml"].parse_ok
    assert "cannot read" in result.files["dangling.yaml"].problems[0].message


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    result = load_directory(tmp_path / "nope")
    assert result.objects == {}
    assert result.problems[0].message == "not a directory"


def test_problem_text_points_at_file_line_object_and_field() -> None:
    problem = FileProblem("routes/a.yaml", 12, "HTTPRoute web", "metadata.name", "required string is missing")
    assert str(problem) == "routes/a.yaml:12: HTTPRoute web: metadata.name: required string is missing"
    assert str(FileProblem("a.yaml", None, None, None, "not UTF-8 text")) == "a.yaml: not UTF-8 text"


# --- generation, creationTimestamp and uid, as the API server would assign them -------------------------


def raw(body: dict[str, object]) -> RawObject:
    return RawObject(key_of(body), body, Source("f.yaml", 1))


def route(spec: object, **meta: object) -> dict[str, object]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", **meta},
        "spec": spec,
    }


def test_generation_bumps_only_on_content_outside_metadata_and_status() -> None:
    times = iter([datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)])
    tracker = GenerationTracker(clock=lambda: next(times))
    first = tracker.stamp(raw(route({"a": 1})))
    meta = first.body["metadata"]
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == "2025-01-02T03:04:05Z"
    assert meta["uid"] == uid_for(first.key)
    relabeled = tracker.stamp(raw(route({"a": 1}, labels={"x": "y"}) | {"status": {"s": 1}}))
    assert relabeled.body["metadata"]["generation"] == 1
    changed = tracker.stamp(raw(route({"a": 2})))
    assert changed.body["metadata"]["generation"] == 2
    assert changed.body["metadata"]["creationTimestamp"] == "2025-01-02T03:04:05Z"
    other_version = raw(route({"a": 2}) | {"apiVersion": "gateway.networking.k8s.io/v1beta1"})
    assert tracker.stamp(other_version).body["metadata"]["generation"] == 2


def test_stamping_copies_and_keeps_what_the_manifest_sets() -> None:
    tracker = GenerationTracker()
    body = route({"a": 1}, generation=7, creationTimestamp="2020-01-01T00:00:00Z", uid="u-1")
    stamped = tracker.stamp(raw(body))
    assert stamped.body["metadata"] == body["metadata"]
    plain = route({"a": 1})
    tracker.stamp(raw(plain))
    assert plain["metadata"] == {"name": "r"}


def test_forgotten_keys_start_over_and_uid_is_stable_per_key() -> None:
    times = iter(datetime(2025, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(10))
    tracker = GenerationTracker(clock=lambda: next(times))
    tracker.stamp_all([raw(route({"a": 1}))])
    (bumped,) = tracker.stamp_all([raw(route({"a": 2}))]).values()
    assert bumped.body["metadata"]["generation"] == 2
    assert tracker.stamp_all([]) == {}
    (again,) = tracker.stamp_all([raw(route({"a": 2}))]).values()
    assert again.body["metadata"]["generation"] == 1
    assert again.body["metadata"]["creationTimestamp"] == "2025-01-01T00:00:01Z"
    assert again.body["metadata"]["uid"] == bumped.body["metadata"]["uid"]

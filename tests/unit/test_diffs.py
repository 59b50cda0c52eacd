"""replaced_keys: the pairwise C path and the lookup path agree."""

from __future__ import annotations

import random

from stackway.diffs import replaced_keys


def reference(now: dict[int, object], before: dict[int, object]) -> list[int]:
    return [k for k, v in now.items() if before.get(k) is not v]


def test_both_paths_agree_on_random_versions() -> None:
    rng = random.Random(1)
    for _ in range(300):
        before = {k: object() for k in rng.sample(range(50), rng.randint(0, 30))}
        now = dict(before)  # same keys, same order: the pairwise path
        for key in rng.sample(sorted(now), min(len(now), rng.randint(0, 3))):
            now[key] = object()
        if rng.random() < 0.3:  # a key removed and one added: the lookup path
            now.pop(next(iter(now), None), None)
            now[rng.randrange(50, 60)] = object()
        if rng.random() < 0.2:  # same keys in another order: the lookup path too
            now = dict(reversed(now.items()))
        assert replaced_keys(now, before) == reference(now, before)


def test_an_equal_but_other_value_counts_as_replaced() -> None:
    assert replaced_keys({"a": [1]}, {"a": [1]}) == ["a"]

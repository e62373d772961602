"""bench/ in rooms: every import points to its own floor or a lower one, no verb imports another, no circles."""

from bench.tools.imports import ROOT, cycles, graph, page, violations


def test_bench_keeps_its_floors():
    assert violations(graph()) == []


def test_the_checker_sees_each_kind_of_break():
    g = {"bench.core.a": {"bench.verbs.x"},  # up a floor
         "bench.verbs.x": {"bench.verbs.y"},  # verb to verb
         "bench.verbs.y": set(),
         "bench.core.b": {"bench.core.c"}, "bench.core.c": {"bench.core.b"}}  # a circle
    bad = violations(g)
    assert "bench.core.a imports bench.verbs.x, a higher floor" in bad
    assert "bench.verbs.x imports bench.verbs.y: a verb imports no other verb" in bad
    assert cycles(g) == [["bench.core.b", "bench.core.c", "bench.core.b"]]


def test_every_verb_and_room_is_in_the_graph():
    g = graph()
    assert {m for m in g if m.startswith("bench.verbs.")} == {
        f"bench.verbs.{v}" for v in ("extract", "evaluate", "distill", "compare", "sweep", "export")}
    assert g["bench.cli"] >= {"bench.verbs.extract", "bench.verbs.compare"}  # importlib names count
    assert "bench.core.progress" in g["bench.core.fitting"]  # `from bench.core import progress` counts


def test_the_picture_is_current():
    assert (ROOT / "docs" / "imports.md").read_text() == page(graph()), \
        "regenerate: python -m bench.tools.imports --out docs/imports.md"

"""The import graph of bench/, read from the source: which module imports which (function-level imports too), the
floor each module stands on, and a Mermaid picture of it.

    python -m bench.tools.imports --out docs/imports.md

Floors, top to bottom: the entrances (`bench.cli`, `bench.tools.*`), the verbs (`bench.verbs.*`), the report
(`bench.report.*`), the core (`bench.core.*`). A module may import its own floor or a lower one; a verb imports no
other verb. `tests/test_imports.py` holds the code to these rules.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"cli": 3, "tools": 3, "verbs": 2, "report": 1, "core": 0}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    """The floor of a bench module: bench.cli, bench.tools.x, bench.verbs.x, bench.report.x or bench.core.x."""
    return FLOORS[module.split(".")[1]]


def imported(path: Path, known: set[str]) -> set[str]:
    """The bench modules `path` imports anywhere in its body (`from bench.core import progress` counts as
    bench.core.progress)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
        elif isinstance(node, ast.Constant) and node.value in known:  # importlib.import_module("bench.verbs.x")
            found.add(node.value)
    return {m for m in found if m in known and m.count(".") >= 1}


def graph() -> dict[str, set[str]]:
    """module -> the bench modules it imports, for every module under bench/ but the package files."""
    paths = {module_name(p): p for p in (ROOT / "bench").rglob("*.py") if p.name != "__init__.py"}
    known = set(paths)
    return {m: imported(p, known) - {m} for m, p in sorted(paths.items())}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once, as a path that returns to its start."""
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in g:
        if m not in state:
            visit(m)
    return found


def violations(g: dict[str, set[str]]) -> list[str]:
    """An import of a higher floor, or of another verb; and every circle."""
    bad = [f"{m} imports {n}, a higher floor" for m, ns in g.items() for n in sorted(ns) if floor(n) > floor(m)]
    bad += [f"{m} imports {n}: a verb imports no other verb" for m, ns in g.items() for n in sorted(ns)
            if m.startswith("bench.verbs.") and n.startswith("bench.verbs.")]
    return bad + [" -> ".join(c) for c in cycles(g)]


def mermaid(g: dict[str, set[str]]) -> str:
    """The graph as a Mermaid flowchart, one subgraph per floor, top floor first."""
    short = lambda m: m.removeprefix("bench.")  # noqa: E731
    lines = ["```mermaid", "flowchart TD"]
    rooms = sorted({m.split(".")[1] for m in g}, key=lambda r: (-FLOORS[r], r))
    for room in rooms:
        members = [m for m in g if m.split(".")[1] == room]
        lines.append(f"  subgraph {room}")
        lines += [f"    {short(m).replace('.', '_')}[{short(m)}]" for m in members]
        lines.append("  end")
    lines += [f"  {short(m).replace('.', '_')} --> {short(n).replace('.', '_')}" for m in g for n in sorted(g[m])]
    return "\n".join(lines + ["```"])


def rooms(g: dict[str, set[str]]) -> str:
    """The floors at a glance: one box per room, an arrow with the number of imports between two rooms."""
    room = lambda m: m.split(".")[1]  # noqa: E731
    counts: dict[tuple[str, str], int] = {}
    for m, ns in g.items():
        for n in ns:
            if room(m) != room(n):
                counts[room(m), room(n)] = counts.get((room(m), room(n)), 0) + 1
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"  {a} -->|{k}| {b}" for (a, b), k in sorted(counts.items(), key=lambda kv: (-FLOORS[kv[0][0]], kv[0]))]
    return "\n".join(lines + ["```"])


def page(g: dict[str, set[str]]) -> str:
    floors = ", ".join(f"`{r}`" for r in sorted(FLOORS, key=lambda r: -FLOORS[r]))
    return (f"# How bench/ is built\n\nFloors, top to bottom: {floors} (cli and tools are the entrances). Each arrow is "
            "an import; every arrow points to the same floor or a lower one, a verb imports no other verb, and "
            "there is no import circle (`tests/test_imports.py`).\n\nRegenerate with "
            "`python -m bench.tools.imports --out docs/imports.md`.\n\n## Rooms\n\n" + rooms(g) + "\n\n## Modules\n\n"
            + mermaid(g) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.imports", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the page here (default: print it)")
    args = p.parse_args(argv)
    g = graph()
    for line in violations(g):
        print(f"import rule broken: {line}")
    text = page(g)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 1 if violations(g) else 0


if __name__ == "__main__":
    raise SystemExit(main())

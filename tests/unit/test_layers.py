"""The architecture a newcomer can see: packages sit on layers and import only downwards (so no
package-level import cycle exists), and no source file grows past 400 lines.

Every `import raylign.X` counts, also one inside a function: a lazy import still ties the
packages together. See docs/architecture.md for the picture these layers draw."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "raylign"

# bottom to top; a package imports packages of lower layers only (never one of its own layer)
LAYERS = [
    {"config", "collectives", "runtime", "metrics"},
    {"models", "data"},
    {"sampling", "scoring"},
    {"preflight", "algorithms"},
    {"recipes", "training"},
    {"engine"},
    {"feedback", "generation", "serving", "smoke"},
    {"evaluation", "launch"},
    {"cli", "benchmarks"},
    {"studies"},  # chains of commands: runs `raylign ...` in-process
    {"__main__"},
]
MAX_LINES = 400


def _top(path: Path) -> str:
    """The top-level package (or module) of raylign a file belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level packages -> the files that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        source = _top(file)
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "raylign" and len(parts) > 1 and parts[1] != source:
                    edges.setdefault((source, parts[1]), []).append(str(file.relative_to(PACKAGE.parent)))
    return edges


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"raylign/{name} sits on no layer of tests/unit/test_layers.py: add it where it belongs")


def test_every_package_imports_only_lower_layers():
    wrong = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)}) in {', '.join(sorted(set(files)))}"
             for (a, b), files in import_edges().items() if _layer(b) >= _layer(a)]
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_package_import_cycle():
    graph: dict[str, set[str]] = {}
    for a, b in import_edges():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in graph if reaches(a, a, {a}))
    assert not cycles, f"packages in an import cycle: {cycles}"


def test_no_source_file_over_400_lines():
    long = {str(f.relative_to(PACKAGE.parent)): n for f in PACKAGE.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"

"""The package's shape: imports run one way (no module imports from a floor above its own, no cycles), and every
file stays small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_infer"
MAX_LINES = 300
LONGER = {
    # STYLE.md 2: the limit is a prompt to look for two concepts, not a reason to cut one. Each file past it is named
    # here with its own ceiling and why it is one concept, so that growth is still noticed.
    "data/sources.py": (
        470,
        "what a source is as units, for each of its five kinds, and the path policy its lists obey",
    ),
    "data/dataset.py": (340, "the one dataset: a unit's items (read, decoded or from the cache) into whole batches"),
    "modules/detector.py": (
        360,
        "the detector: its options with their docstrings, the detection contract, and the way back to image pixels",
    ),
}

FLOORS: list[tuple[int, tuple[str, ...]]] = [
    # The contract and what everything may use: errors, the records every stage shares, plain helpers.
    (
        0,
        (
            "errors",
            "records",
            "ragged",
            "host_copy",
            "plan",
            "preprocessing",
            "security",
            "checksum",
            "own_code",
            "atomic",
            "system",
            "quiet",
        ),
    ),
    # Inputs and the network: sources, decoding, batches; building a net; measuring one.
    (1, ("data", "models", "constructors", "nets", "tuning")),
    (2, ("modules",)),
    (3, ("strategies",)),
    # What a run leaves on disk (parts, the merge, formats) and the report that reads it, then the run's lifecycle around Lightning's loop
    # (plan, finalize), then the callbacks that carry it out in the loop: one way, never back (no cycle between
    # ``lifecycle/`` and ``callbacks/``).
    (4, ("output", "report")),
    (5, ("lifecycle",)),
    (6, ("callbacks",)),
    (7, ("run", "cli", "merge_cmd", "__main__", "__init__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    rest = module.split(".")[1:] or ["__init__"]
    for floor, names in FLOORS:
        if rest[0] in names:
            return floor
    raise AssertionError(f"{module} has no floor in tests/test_structure.py: add it to FLOORS")


def imports_of(path: Path) -> set[str]:
    """Every ``lit_infer`` module that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lit_infer"):
            found.add(node.module)
            # ``from lit_infer import security`` imports the module lit_infer.security.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lit_infer"))
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def with_parents(module: str, targets: set[str]) -> set[str]:
    """Importing ``a.b.c`` first runs ``a/b/__init__.py``: a cycle through a package's ``__init__`` is real. The
    module's own packages are already being imported when it runs, so they are no implicit edge of its own."""
    own = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
    out = set(targets)
    for target in targets:
        parts = target.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return out - (own - targets) - {module}


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    upward = [
        f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
        for module, targets in graph().items()
        for target in targets
        if target != "lit_infer" and floor_of(target) > floor_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_imports_have_no_cycles() -> None:
    edges = {module: with_parents(module, targets) for module, targets in graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target == "lit_infer" or target not in edges:
                continue
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_check_sees_a_back_edge() -> None:
    # The checker itself: a data module importing a strategy is a back edge it must report.
    assert floor_of("lit_infer.data.dataset") < floor_of("lit_infer.strategies.dp")
    assert "lit_infer.data.dataset" in graph()["lit_infer.data.datamodule"]


def test_lifecycle_and_callbacks_do_not_import_each_other_back() -> None:
    # The writer carries out the lifecycle; the lifecycle never reaches into a callback (nor the output into either).
    assert floor_of("lit_infer.output.merge") < floor_of("lit_infer.lifecycle.plan") < floor_of("lit_infer.callbacks")
    back = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if module.startswith(("lit_infer.lifecycle", "lit_infer.output")) and target.startswith("lit_infer.callbacks")
    ]
    assert not back, "\n".join(back)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_is_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    limit = LONGER.get(str(path.relative_to(PACKAGE)), (MAX_LINES, ""))[0]
    assert lines <= limit, f"{path.relative_to(PACKAGE.parent)} has {lines} lines; split it by concern"

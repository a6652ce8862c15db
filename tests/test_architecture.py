"""The package's shape (docs/ARCHITECTURE.md) held against the code, with the stdlib's ast only.

- imports point down the layers: core <- config <- dlc, tracking <- data, evaluate, demo <- train
  <- quality, report, refine, sweep <- commands <- cli; packages on one floor never import each
  other; no import cycle between modules or between packages;
- only ``commands/`` reads params.yaml or argv;
- no source file over 800 lines;
- every DVC stage (dvc.yaml, pipelines/*/dvc.yaml) lists, in its deps, the source of every module
  its command imports (directly or not), so ``dvc repro`` re-runs a stage whose code changed.

``python tests/test_architecture.py`` prints the source deps each stage needs.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PKG = SRC / "poseops"
MAX_LINES = 800

# floor of each top-level part of the package (imports may only point to a lower floor)
FLOORS: dict[str, int] = {
    "core": 0,
    "config": 1,
    "dlc": 2, "tracking": 2,
    "data": 3, "evaluate": 3, "demo": 3, "behaviour": 3,
    "train": 4,
    "quality": 5, "report": 5, "refine": 5, "sweep": 5,
    "commands": 6,
    "cli": 7,
}
ROOT = "poseops"  # the root package (__init__: the version only) may be imported by anyone
# what "reading params.yaml" means in code: the loader's readers/writers of the file, and argv
PARAMS_READERS = {"load_params", "section", "params_path", "update_params", "DEFAULT_PARAMS"}
PARAMS_OWNERS = {"commands", "config", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """``poseops.data.split`` -> its file, for every module of the package."""
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def part(module: str) -> str:
    """The top-level part a module belongs to: ``poseops.data.split`` -> ``data``;
    ``poseops.cli`` -> ``cli``; ``poseops`` -> ``poseops``."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else ROOT


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for one import statement, within poseops only."""
    mods = modules()
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.split(".")[0] == ROOT]
    if node.level:  # relative: from . import x / from ..y import z
        base = module.split(".")
        if modules()[module].name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != ROOT:
        return []
    out: list[tuple[str, list[str]]] = []
    plain: list[str] = []
    for alias in node.names:  # `from poseops.data import split` imports the module data.split
        sub = f"{target}.{alias.name}"
        if sub in mods:
            out.append((sub, []))
        else:
            plain.append(alias.name)
    if plain or not out:
        out.append((target, plain))
    return out


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(n) for b in node.body for n in ast.walk(b)}
    return found


@cache
def imports(runtime_only: bool = False) -> dict[str, list[tuple[str, list[str], int]]]:
    """module -> [(imported poseops module, names, line)], every import statement (function-level
    ones too: a lazy import is still a dependency); ``runtime_only`` leaves out the imports under
    ``if TYPE_CHECKING:`` (they may point back without a cycle at run time, never up a layer)."""
    graph: dict[str, list[tuple[str, list[str], int]]] = {}
    for mod, path in modules().items():
        edges = []
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                for target, names in _resolve(mod, node):
                    edges.append((target, names, node.lineno))
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _known(target: str) -> str | None:
    """The module file an import lands in (``poseops.data.split.make_split`` -> data.split)."""
    mods = modules()
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def module_graph() -> dict[str, set[str]]:
    """module -> the modules it imports when it runs (what a cycle and a stage's code are)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, edges in imports(runtime_only=True).items():
        graph[mod]
        for target, _, _ in edges:
            t = _known(target)
            if t and t != mod:
                graph[mod].add(t)
    return graph


# --------------------------------------------------------------------------------------------
# the rules


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = sorted({part(m) for m in modules()} - set(FLOORS) - {ROOT})
    assert not unknown, f"packages with no floor in docs/ARCHITECTURE.md / FLOORS: {unknown}"


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(module_graph()) == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, targets in module_graph().items():
        for t in targets:
            if part(t) != part(mod):
                graph[part(mod)].add(part(t))
    assert _cycles(graph) == []


def test_imports_point_down_the_layers() -> None:
    bad = []
    for mod, edges in imports().items():
        src = part(mod)
        for target, _, line in edges:
            dst = part(target)
            if dst in (src, ROOT) or src == ROOT:
                continue
            if FLOORS.get(dst, 99) >= FLOORS.get(src, -1):
                how = "sideways" if FLOORS.get(dst) == FLOORS.get(src) else "up"
                bad.append(f"{modules()[mod].relative_to(REPO)}:{line} imports {target} ({how})")
    assert bad == [], "\n".join(bad)


def test_only_commands_read_params_yaml_or_argv() -> None:
    bad = []
    for mod, path in modules().items():
        if part(mod) in PARAMS_OWNERS:
            continue
        for target, names, line in imports()[mod]:
            if target == "poseops.config.loader" and PARAMS_READERS & set(names):
                bad.append(f"{path.relative_to(REPO)}:{line} {sorted(PARAMS_READERS & set(names))}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "argparse" in names:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports argparse")
            if isinstance(node, ast.Constant) and node.value == "POSEOPS_PARAMS":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} reads POSEOPS_PARAMS")
            if isinstance(node, ast.Attribute) and node.attr == "argv":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} reads sys.argv")
    assert bad == [], "\n".join(bad)


def test_no_source_file_over_the_limit() -> None:
    long = {str(p.relative_to(REPO)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


# --------------------------------------------------------------------------------------------
# dvc.yaml deps cover what each stage's command imports


def closure(module: str) -> set[str]:
    """Every poseops module ``module`` imports, directly or not (itself included)."""
    graph = module_graph()
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
        parent = m.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a/b/__init__ first
        while parent and parent in modules():
            todo.append(parent)
            parent = parent.rpartition(".")[0]
    return seen


@cache
def command_table() -> dict[str, str]:
    """verb -> command module, read from commands/__init__.py's COMMANDS literal."""
    tree = ast.parse((PKG / "commands" / "__init__.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "COMMANDS":
            table = ast.literal_eval(node.value)
            return {verb: f"poseops.commands.{name}" for verb, name in table.items()}
    raise AssertionError("commands/__init__.py defines no COMMANDS table")


def stage_files(verb: str) -> set[Path]:
    """The source files `poseops <verb>` runs: the CLI, the command table, the command module
    and everything it imports."""
    mods = closure(command_table()[verb]) | closure("poseops.cli")
    return {modules()[m] for m in mods}


def dvc_stages() -> list[tuple[Path, str, str, list[str]]]:
    """(dvc.yaml file, stage name, verb, deps as written relative to the repository root)."""
    found = []
    for dvc_file in [REPO / "dvc.yaml", *sorted((REPO / "pipelines").glob("*/dvc.yaml"))]:
        doc = yaml.safe_load(dvc_file.read_text())
        for name, stage in (doc.get("stages") or {}).items():
            words = str(stage.get("cmd", "")).split()
            if len(words) < 2 or words[0] != "poseops":
                continue
            wdir = (dvc_file.parent / stage.get("wdir", ".")).resolve()
            deps = [str((wdir / d).resolve().relative_to(REPO)) for d in stage.get("deps", [])
                    if isinstance(d, str) and "${" not in d]
            found.append((dvc_file, name, words[1], deps))
    return found


def missing_deps(deps: list[str], files: set[Path]) -> list[str]:
    covered = [REPO / d for d in deps]
    return sorted(str(f.relative_to(REPO)) for f in files
                  if not any(f == c or c in f.parents for c in covered))


def needed_deps(verb: str) -> list[str]:
    """What a stage of ``verb`` should list: the command module, the CLI files, and each library
    package folder it imports."""
    out = set()
    for f in stage_files(verb):
        rel = f.relative_to(PKG)
        if len(rel.parts) == 1 or rel.parts[0] == "commands":
            out.add(str(f.relative_to(REPO)))
        else:
            out.add(str((PKG / rel.parts[0]).relative_to(REPO)))
    return sorted(out)


STAGES = dvc_stages()


def test_every_stage_runs_a_known_command() -> None:
    assert STAGES, "no poseops stage found in dvc.yaml"
    unknown = [f"{f.relative_to(REPO)}: {name} runs poseops {verb}" for f, name, verb, _ in STAGES
               if verb not in command_table()]
    assert unknown == []


@pytest.mark.parametrize(("dvc_file", "stage", "verb", "deps"), STAGES,
                         ids=[f"{f.parent.name}:{s}" for f, s, _, _ in STAGES])
def test_stage_deps_cover_the_code_its_command_imports(dvc_file: Path, stage: str, verb: str,
                                                         deps: list[str]) -> None:
    missing = missing_deps(deps, stage_files(verb))
    assert missing == [], (f"{dvc_file.relative_to(REPO)} stage {stage!r} (poseops {verb}) does "
                           f"not list: {missing}; it needs {needed_deps(verb)}")


# --------------------------------------------------------------------------------------------
# the checker itself can fail: a constructed graph and files it must flag


def test_checker_finds_a_cycle_and_an_uncovered_file() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    f = PKG / "data" / "split.py"
    assert missing_deps(["src/poseops/data"], {f}) == []
    assert missing_deps(["src/poseops/data/ingest.py"], {f}) == ["src/poseops/data/split.py"]


if __name__ == "__main__":
    for f, name, verb, _ in STAGES:
        print(f"{f.relative_to(REPO)} {name}:")
        for d in needed_deps(verb):
            print(f"      - {d}")

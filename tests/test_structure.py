"""The package's shape: no import cycle between dpsynth's modules, and no module too long to hold in mind.

Imports are read from the source (``ast``), not executed, and every import counts: at module level
and inside functions alike (a function-level import only defers a cycle, it does not remove it).
Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "dpsynth"
MAX_LINES = 550


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dpsynth modules that module ``name`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def resolve(target: str) -> None:
        # ``import a.b.c`` runs a, a.b and a.b.c; the edge that matters is to the module named
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dpsynth":
                    resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "dpsynth":
                return
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                resolve(sub if sub in modules else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "dpsynth.config" in graph["dpsynth.api"]  # the reader sees the imports
    found = cycles(graph)
    assert not found, "import cycles between dpsynth modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "dpsynth"
    src.mkdir()
    (src / "one.py").write_text("def f():\n    from dpsynth import two\n")
    (src / "two.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dpsynth.one import f\n")
    modules = {"dpsynth.one": src / "one.py", "dpsynth.two": src / "two.py"}
    assert _imported("dpsynth.one", src / "one.py", modules) == {"dpsynth.two"}
    assert _imported("dpsynth.two", src / "two.py", modules) == set()


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them where there is a seam): {long}"


# ------------------------------------------------------------------ run-directory paths are named in RunDir
# A method (or the API) asks ``RunDir`` for every path of its run directory (``run_dir.checkpoint``,
# ``run_dir.release(key)``); joining a name onto one (``run_dir.path / "x.json"``) writes a file RunDir does
# not know, so resume, the docs and other tools cannot find it.
RUN_DIR_USERS = [
    *sorted((PACKAGE / "methods").rglob("*.py")),
    *sorted((PACKAGE / "evaluate").rglob("*.py")),
    *sorted((PACKAGE / "report").rglob("*.py")),
    PACKAGE / "api.py",
    PACKAGE / "cli.py",
]
_RUN_DIR_ATTRS = {"run_dir", "rundir"}  # ``self.rundir`` holds one too


def _run_dir_path_members() -> set[str]:
    """RunDir's members that give a path: ``path`` and every property or method annotated ``-> Path``."""
    import inspect

    from dpsynth.run import RunDir

    out = {"path"}
    for name, member in vars(RunDir).items():
        func = member.fget if isinstance(member, property) else member
        if inspect.isfunction(func) and inspect.signature(func).return_annotation in ("Path", Path):
            out.add(name)
    return out


def hand_built_run_paths(source: str, path_members: set[str]) -> list[str]:
    """Where ``source`` joins something onto a run-directory path (``/`` or ``joinpath``), as 'line: code'.

    Per function: run directories are ``run_dir``, ``self.rundir``, a parameter annotated ``RunDir``, a
    ``RunDir(...)``, and names bound to one; their paths are ``<run dir>.<member>`` (``.path``,
    ``.adapter``, ``.release(key)``), the ``.parent`` of one, one joined onto, and names bound to one.
    """
    tree = ast.parse(source)
    found: list[str] = []

    def scan(scope: ast.AST) -> None:
        dirs = set(_RUN_DIR_ATTRS)
        paths: set[str] = set()
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            for a in [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs]:
                if a.annotation is not None and "RunDir" in ast.unparse(a.annotation):
                    dirs.add(a.arg)

        def is_dir(e: ast.expr) -> bool:
            if isinstance(e, ast.Name):
                return e.id in dirs
            if isinstance(e, ast.Attribute):
                return e.attr in _RUN_DIR_ATTRS
            return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "RunDir"

        def is_path(e: ast.expr) -> bool:
            if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Div):
                return is_path(e.left)
            if isinstance(e, ast.Call):
                e = e.func
            if isinstance(e, ast.Name):
                return e.id in paths
            if isinstance(e, ast.Attribute):
                return (e.attr in path_members and is_dir(e.value)) or (e.attr == "parent" and is_path(e.value))
            return False

        nodes: list[ast.AST] = []  # the scope's own nodes: a nested function is a scope of its own
        todo = list(ast.iter_child_nodes(scope))
        while todo:
            n = todo.pop()
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                nodes.append(n)
                todo.extend(ast.iter_child_nodes(n))
        for _ in range(3):  # bindings in any order: a name bound to a name bound to a run directory
            for n in nodes:
                if isinstance(n, ast.Assign | ast.AnnAssign | ast.NamedExpr) and n.value is not None:
                    targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                    names = {t.id for t in targets if isinstance(t, ast.Name)}
                    if is_dir(n.value):
                        dirs |= names
                    elif is_path(n.value):
                        paths |= names
        for n in nodes:
            joined = (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and is_path(n.left)) or (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr == "joinpath"
                and is_path(n.func.value)
            )
            if joined:
                found.append(f"{n.lineno}: {ast.unparse(n)}")  # type: ignore[attr-defined]

    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            scan(node)
    return sorted(set(found))


def test_methods_ask_run_dir_for_their_paths() -> None:
    members = _run_dir_path_members()
    assert {"path", "checkpoint", "adapter", "release", "votes", "knowledgesg_state"} <= members
    found = {
        str(p.relative_to(SRC)): hits
        for p in RUN_DIR_USERS
        if (hits := hand_built_run_paths(p.read_text(encoding="utf-8"), members))
    }
    assert not found, f"paths built by hand onto a run directory (name them in run.RunDir): {found}"


def test_run_path_checker_flags_a_planted_join() -> None:
    members = _run_dir_path_members()
    planted = """
from dpsynth.run import RunDir

def write(run_dir: RunDir, key: str) -> None:
    (run_dir.path / "notes.json").write_text("{}")
    ckpt = run_dir.adapter
    ckpt.joinpath("weights.bin")
    state = run_dir.knowledgesg_state
    state.parent / "other.json"
    run_dir.release(key) / "x"
    sub = run_dir.path / "sub"
    sub / "plan.json"

class M:
    def run(self, rd: RunDir) -> None:
        self.rundir = rd
        base = self.rundir.path
        base / f"round_{1}.npz"
        RunDir("out").path / "x"
"""
    hits = hand_built_run_paths(planted, members)
    assert [h.split(":")[0] for h in hits] == ["10", "11", "12", "18", "19", "5", "7", "9"], hits
    clean = """
def ok(run_dir, n: int, path) -> float:
    run_dir.checkpoint.write_text("x")
    p = run_dir.release("counts")
    other = path / "fine.json"   # not a run directory
    return run_dir.resuming / n if n else len(str(p)) / 2
"""
    assert hand_built_run_paths(clean, members) == []

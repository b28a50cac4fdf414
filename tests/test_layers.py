"""The layer rules (README, Layout), checked on the source: shards/ is the format and imports neither Beam nor
DALI; pipelines/ (Beam jobs) and loaders/ (DALI loaders) build on shards/ and not on each other; nothing in the
library imports the benchmarks, the infrastructure or the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "shards": ("apache_beam", "nvidia", "torch"),
    "pipelines": ("nvidia",),
    "loaders": ("apache_beam",),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_rules(package):
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & set(FORBIDDEN[package])) for p in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in bad.items() if v}, f"{package}/ breaks the layer rules (README, Layout)"


# which top-level packages each library package may import: shards <- pipelines, loaders; nothing in the
# library imports the benchmarks, the infrastructure or the tests (they import the library)
MAY_IMPORT = {"shards": {"shards"}, "pipelines": {"shards", "pipelines"}, "loaders": {"shards", "loaders"}}
OURS = {"shards", "pipelines", "loaders", "infra", "tests", "benchmarks"}


def test_import_arrows_point_down():
    """Every import of our own packages, at module level or inside a function, follows the arrows."""
    upward = []
    for package, allowed in MAY_IMPORT.items():
        for p in (ROOT / package).rglob("*.py"):
            ours = {n for n in _imports(p) if n in OURS}
            upward += [f"{p.relative_to(ROOT)} -> {n}" for n in sorted(ours - allowed)]
    assert not upward, f"imports against the layer arrows: {upward}"


def test_benchmark_entries_in_the_library_only_forward_the_command():
    """`python -m loaders.bench` and the like keep their names as entries that run a module of infra/bench/ by
    name when run as a command; importing one does nothing, and it holds no code of its own."""
    for p in [*(ROOT / "loaders").glob("bench*.py"), *(ROOT / "pipelines").glob("bench*.py"), ROOT / "shards/bench.py"]:
        tree = ast.parse(p.read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert len(body) == 2 and isinstance(body[1], ast.If), f"{p.relative_to(ROOT)} is more than a thin entry"
        target = body[1].body[-1].value.args[0].value
        assert target.startswith("infra.bench.") and (ROOT / (target.replace(".", "/") + ".py")).exists(), p


def test_the_registries_are_the_only_lists_of_datasets():
    """A new dataset is a job module, a loader module and a fixture module: its name is written in no other
    library file (the registries fill themselves as the packages' modules are imported)."""
    import pipelines

    names = set(pipelines.available())
    found: dict[str, set[str]] = {}
    for package in MAY_IMPORT:
        for p in (ROOT / package).rglob("*.py"):
            for n in ast.walk(ast.parse(p.read_text())):  # names in a list, set, tuple, dict key or comparison
                listed = [*getattr(n, "elts", ()), *(getattr(n, "keys", None) or ()), *getattr(n, "comparators", ())]
                for c in listed:
                    if isinstance(c, ast.Constant) and c.value in names:
                        found.setdefault(c.value, set()).add(p.relative_to(ROOT).as_posix())
    for name, files in found.items():
        own = {f for f in files if f.split("/")[1].removesuffix(".py") == name}
        assert not files - own, f"{name!r} is listed outside its own modules: {files - own}"


def test_every_module_has_a_docstring_and_all():
    missing = []
    for package in ("shards", "pipelines", "loaders", "infra"):
        for p in (ROOT / package).rglob("*.py"):
            tree = ast.parse(p.read_text())
            has_all = any(
                isinstance(n, ast.Assign | ast.AnnAssign)
                and any(
                    getattr(t, "id", None) == "__all__"
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                )
                for n in tree.body
            )
            if not ast.get_docstring(tree) or (not has_all and p.name != "__main__.py"):
                missing.append(str(p.relative_to(ROOT)))
    assert not missing, f"modules without a docstring (what it is for) or __all__ (what it exports): {missing}"

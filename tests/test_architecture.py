"""The house rules of docs/architecture.md, read from the code: who imports whom, sizes, no asserts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for d in ("mtl_model", "checks", "dags") for p in sorted((ROOT / d).rglob("*.py"))]
ROOT_MODULES = {
    *("config", "contract", "dates", "duck", "files", "hashing", "landing_check", "__init__", "__version__")
}
# what each room may import from mtl_model (besides the root modules)
ALLOWED = {
    "root": set(),
    "sources": {"sources"},
    "learn": {"learn"},
    "outputs": {"learn", "outputs"},
    "pipeline": {"sources", "learn", "outputs", "pipeline"},
    "checks": set(),
    "dags": {"pipeline"},
}
TRAINER = ("mtl_model.learn.train", "mtl_model.learn.fit")


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] in ("checks", "dags"):
        return rel[0]
    return "root" if len(rel) == 2 else rel[1]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mtl_model import x` names a submodule (or __version__); else the module counts
            names = [f"{node.module}.{a.name}" for a in node.names]
            out += names if node.module == "mtl_model" else [node.module]
    return [m for m in out if m.startswith("mtl_model")]


def import_violations(path: Path, room: str) -> list[str]:
    bad = []
    for module in _imports(path):
        parts = module.split(".")
        if len(parts) == 1 or parts[1] in ROOT_MODULES:
            continue
        if parts[1] not in ALLOWED[room]:
            bad.append(f"{path.name} ({room}) imports {module}")
        elif room == "outputs" and module.startswith(TRAINER):
            bad.append(f"{path.name} borrows from the trainer: {module}")
    return bad


def size_violations(text: str) -> list[str]:
    bad = [f"{len(text.splitlines())} lines"] if len(text.splitlines()) > 600 else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
            bad.append(f"{node.name} is {node.end_lineno - node.lineno + 1} lines")
        if isinstance(node, ast.Assert):
            bad.append(f"assert at line {node.lineno}: raise an error instead")
    return bad


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_the_root_and_earlier_stages(path: Path) -> None:
    assert import_violations(path, _room(path)) == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_600_lines_no_function_over_80_no_assert(path: Path) -> None:
    assert size_violations(path.read_text()) == []


def test_the_rules_report_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from mtl_model.learn.fit import fit_model\nfrom mtl_model.pipeline import cli\n")
    assert len(import_violations(bad, "outputs")) == 2 and len(import_violations(bad, "learn")) == 1
    long = "def f():\n" + "    x = 1\n" * 80 + "assert x\n"
    assert size_violations(long) == ["f is 81 lines", "assert at line 82: raise an error instead"]


def test_one_atomic_writer_and_one_date_parser() -> None:
    """Nobody but mtl_model.files renames a temporary file into place; nobody but mtl_model.dates
    parses a day with date.fromisoformat."""
    for path in LIBRARY:
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        if rel != "mtl_model/files.py":
            assert "os.replace(" not in text and "os.rename(" not in text and "tmp.rename(" not in text, rel
        if rel != "mtl_model/dates.py":
            assert "date.fromisoformat" not in text, rel
        # the one module of mtl_model that opens the warehouse (the data checks read it on their own)
        if rel.startswith("mtl_model/") and rel != "mtl_model/outputs/warehouse.py":
            assert "connect(str(settings.warehouse_path)" not in text, rel


def test_one_duckdb_opener() -> None:
    """Every DuckDB session of the library comes from mtl_model.duck.connect (no progress bar in a
    task's log, the memory limit as an option): nobody else calls duckdb.connect."""
    for path in LIBRARY:
        rel = str(path.relative_to(ROOT))
        calls = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "connect"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "duckdb"
        ]
        if rel not in ("mtl_model/duck.py", "dags/analysts_example.py"):  # the example is an analyst's code
            assert not calls, (rel, calls)


def test_one_hash() -> None:
    """Every seeded draw and hash bucket comes from mtl_model.hashing (docs/architecture.md): nobody
    else calls Polars' version-bound hash, BLAKE2b or md5 in Python, or defines a mixer of its own."""
    for path in LIBRARY:
        rel = str(path.relative_to(ROOT))
        if rel == "mtl_model/hashing.py" or path.suffix != ".py":
            continue
        text = path.read_text()
        for needle in (
            ".hash(",
            "hash_rows(",
            "hashlib.blake2",
            "hashlib.md5",
            "def _mix64",
            "0x9E3779B97F4A7C15",
        ):
            assert needle not in text, (rel, needle)

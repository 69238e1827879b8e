"""The shape of the library: no import cycles, one writer of the ledger's tables, the formatter run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "codepairs"


def test_no_import_cycle_inside_the_package() -> None:
    """Every import counts, at module level or inside a function: a module that imports another must
    not be reachable from it."""
    graph = grimp.build_graph("codepairs")
    modules = sorted(m for m in graph.modules if not m.startswith("codepairs.migrations"))
    cycles = sorted(
        {
            tuple(sorted((a, b)))
            for a in modules
            for b in graph.find_modules_directly_imported_by(a)
            if b != a and b in modules and graph.chain_exists(importer=b, imported=a)
        }
    )
    assert cycles == []


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path, monkeypatch) -> None:
    """The check above would catch config -> crawl -> config as it was (an import inside a function)."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyc import b\n")
    (pkg / "b.py").write_text("from cyc import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyc", cache_dir=None)
    assert graph.chain_exists(importer="cyc.a", imported="cyc.b") and graph.chain_exists("cyc.b", "cyc.a")


def test_only_the_ledger_writes_runs_batches_and_skips() -> None:
    writes = re.compile(r"(INSERT INTO|UPDATE|DELETE FROM)\s+(runs|batches|skips)\b", re.IGNORECASE)
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts and path.name != "ledger.py" and writes.search(path.read_text())
    ]
    assert offenders == []


def test_the_formatter_has_nothing_to_change() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]

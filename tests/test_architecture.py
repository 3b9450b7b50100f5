"""The layering contract of pyproject.toml ([tool.importlinter]) holds: no upward import, no cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                        no_logo=True) == 0


def test_the_contract_can_fail(tmp_path):
    """A layer that imports one above it breaks the contract (the check is not vacuous)."""
    from importlinter.cli import lint_imports

    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    layers = config[config.index("[tool.importlinter]"):]
    # data above models: every models -> data import is now an upward one
    swapped = layers.replace('    "ephys2tx.models",\n', "").replace(
        '    "ephys2tx.data",\n', '    "ephys2tx.data",\n    "ephys2tx.models",\n')
    path = tmp_path / "contracts.toml"
    path.write_text(swapped, encoding="utf-8")
    assert lint_imports(config_filename=str(path), no_cache=True, no_logo=True) == 1


def _imported_after(statement: str) -> set[str]:
    code = (f"import sys; {statement}; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


HEAVY = {"torch", "ipfx", "pynwb", "matplotlib", "dask", "distributed", "skops", "ot", "sklearn",
         "imblearn", "pytorch_metric_learning", "scipy"}


def test_the_cli_starts_without_heavy_imports():
    """``ephys2tx --help`` loads no scientific library (start-up time)."""
    assert not HEAVY & _imported_after("import ephys2tx.cli")


def test_library_modules_import_heavy_libraries_only_where_used():
    loaded = _imported_after("import ephys2tx.mapping, ephys2tx.study, ephys2tx.workflows, "
                             "ephys2tx.report.writer, ephys2tx.models.registry")
    assert not {"torch", "ipfx", "pynwb", "matplotlib", "dask", "distributed", "skops", "ot",
                "pytorch_metric_learning"} & loaded


def test_neural_estimator_modules_import_torch_only_when_a_network_is_used():
    """The estimators can be named (registry, persistence, estimator checks) without torch."""
    loaded = _imported_after("import ephys2tx.models.bilstm, ephys2tx.models.transfer; "
                             "from ephys2tx.models.registry import make_model; "
                             "make_model('bilstm', {'a': ['x'], 'b': ['y']}, ['x', 'y'])")
    assert "torch" not in loaded
    assert "torch" in _imported_after("from ephys2tx.models.bilstm import FamilyTokenBiLSTM")


_COLLECTED_MODULES = """
import sys
import pytest

class Report:
    def pytest_collection_finish(self, session):
        print("LOADED", " ".join(sorted({m.split(".")[0] for m in sys.modules})))

raise SystemExit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", TESTS],
                             plugins=[Report()]))
"""


def test_collecting_the_tests_imports_no_heavy_library():
    """Test collection imports no torch, ipfx, pynwb, matplotlib or dask: they are imported by
    the tests and fixtures that use them (collection used to take about a minute)."""
    from pathlib import Path

    tests = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", _COLLECTED_MODULES.replace("TESTS", repr(tests))],
                         capture_output=True, text=True, cwd=Path(tests).parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("LOADED "))
    loaded = set(line.split()[1:])
    assert "pytest" in loaded and "ephys2tx" in loaded
    assert not {"torch", "ipfx", "pynwb", "matplotlib", "dask", "distributed"} & loaded

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

"""The layering contract of pyproject.toml ([tool.importlinter]) holds: no upward import, no cycle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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


def _fold_fit_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == "fold fits"]
    return contract


def test_the_fold_fit_contract_forbids_what_the_fold_cache_leaves_out():
    """The forbidden list of the ``fold fits`` contract is fold_cache.NOT_IN_FOLD_FITS."""
    from ephys2tx.evaluation.fold_cache import NOT_IN_FOLD_FITS

    contract = _fold_fit_contract()
    assert contract["type"] == "forbidden"
    assert contract["forbidden_modules"] == list(NOT_IN_FOLD_FITS)
    assert {"ephys2tx.evaluation.cv", "ephys2tx.models.registry"} <= set(contract["source_modules"])
    assert not contract.get("allow_indirect_imports", False)


def test_modules_loaded_by_name_in_fold_fit_code_are_sources_of_the_contract():
    """import-linter cannot see ``LazyModule("ephys2tx.x")`` or ``import_module("ephys2tx.x")``:
    each such module named in fingerprinted code is in (or under) a source of the contract, so
    its own imports are checked too."""
    import ephys2tx
    from ephys2tx.evaluation.fold_cache import fingerprinted_files

    package = Path(ephys2tx.__file__).parent
    sources = _fold_fit_contract()["source_modules"]
    named = set()
    for relative in fingerprinted_files(package):
        if relative.suffix == ".py":
            text = (package / relative).read_text(encoding="utf-8")
            named |= set(re.findall(r"(?:LazyModule|import_module)\(\s*[\"'](ephys2tx[\w.]*)[\"']", text))
    assert "ephys2tx.models.nn.networks" in named
    outside = sorted(m for m in named if not any(m == s or m.startswith(s + ".") for s in sources))
    assert not outside, f"loaded by name but not checked by the fold fits contract: {outside}"


def _lint_copy(tmp_path: Path, edit=None) -> subprocess.CompletedProcess:
    """import-linter's ``fold fits`` contract alone, on a copy of the package (edited by ``edit``)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "ephys2tx", src / "ephys2tx",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if edit is not None:
        edit(src / "ephys2tx")
    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = config[config.index('[[tool.importlinter.contracts]]\nname = "fold fits"'):]
    block = block[:block.index("]\n", block.index("forbidden_modules")) + 2]
    path = tmp_path / "contracts.toml"
    path.write_text('[tool.importlinter]\nroot_package = "ephys2tx"\n\n' + block, encoding="utf-8")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(path)!r}, no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path)


def test_the_fold_fit_contract_can_fail(tmp_path):
    """An estimator module that imports an excluded module, even inside a function and through
    another module, breaks the contract (imports the layers contract allows: models -> features)."""

    def add_import(package: Path):
        with (package / "models" / "spca.py").open("a", encoding="utf-8") as handle:
            handle.write("\n\ndef _columns(table):\n"
                         "    from ephys2tx.features.column_map import load_column_map\n\n"
                         "    return load_column_map(table)\n")

    kept = _lint_copy(tmp_path / "kept")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "fold fits KEPT" in kept.stdout
    broken = _lint_copy(tmp_path / "broken", add_import)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "fold fits BROKEN" in broken.stdout
    assert "ephys2tx.models.spca -> ephys2tx.features.column_map" in broken.stdout


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


_PREDICT_MODULES = """
import sys
from ephys2tx.cli import main
code = main(["predict", "--model", MODEL, "--input", TABLE, "--out", OUT])
print("LOADED", code, " ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_predict_with_a_forest_imports_no_network_plotting_or_nwb_library(human_forest_dir, human,
                                                                         tmp_path):
    """The whole ``ephys2tx predict`` of a forest, Parquet in: scikit-learn, scipy and skops
    load the model; torch, matplotlib, dask, ipfx and pynwb are never imported (start-up time of
    the command the speed target is measured on, README "Speed")."""
    table = tmp_path / "cells.parquet"
    human.features.iloc[:50].rename_axis("cell_id").reset_index().to_parquet(table)
    code = (_PREDICT_MODULES.replace("MODEL", repr(str(human_forest_dir)))
            .replace("TABLE", repr(str(table))).replace("OUT", repr(str(tmp_path / "p.csv"))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LOADED ")), "")
    assert line.split()[1:2] == ["0"], out.stdout[-2000:] + out.stderr[-2000:]
    loaded = set(line.split()[2:])
    assert {"sklearn", "scipy", "skops", "pandas", "pyarrow"} <= loaded
    assert not {"torch", "matplotlib", "dask", "distributed", "ipfx", "pynwb", "ot",
                "pytorch_metric_learning"} & loaded

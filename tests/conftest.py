"""Shared fixtures: the real data directory and the loaded datasets.

The data lives beside the repository (``../shared/data``) on every developer
machine and in CI; ``EPHYS2TX_DATA`` overrides it. Tests that need it fail
(never skip) when it is absent, so a broken CI set-up cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ephys2tx.data.paths import ENV_VAR
from ephys2tx.data.registry import all_files

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory, with every registered file present."""
    root = Path(os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR).expanduser()
    if not root.is_dir():
        pytest.fail(f"real data directory {root} not found; put the Patch-seq data at "
                    f"{DEFAULT_DATA_DIR} or set ${ENV_VAR} to its location.", pytrace=False)
    missing = [f.relpath for f in all_files() if not (root / f.relpath).is_file()]
    if missing:
        pytest.fail(f"data directory {root} lacks {', '.join(missing)}; run "
                    f"`ephys2tx fetch --data-dir {root}`.", pytrace=False)
    return root


@pytest.fixture(scope="session")
def mouse_visp(data_dir):
    from ephys2tx.data.datasets import load_dataset

    return load_dataset("mouse_visp", data_dir)


@pytest.fixture(scope="session")
def human(data_dir):
    from ephys2tx.data.datasets import load_dataset

    return load_dataset("human", data_dir)


@pytest.fixture(scope="session")
def bridge(data_dir):
    from ephys2tx.data.datasets import load_dataset

    return load_dataset("mouse_l1_bridge", data_dir)


@pytest.fixture(scope="session")
def human_forest_dir(data_dir, tmp_path_factory):
    """A small human forest trained through ``ephys2tx train`` (seed 0); read it, never change it."""
    from ephys2tx.cli import main

    out = tmp_path_factory.mktemp("models") / "human_forest"
    code = main(["train", "--species", "human", "--model", "forest", "--n-estimators", "10",
                 "--n-splits", "3", "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 0
    return out


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``ephys2tx ARGS`` in this process: (exit code, stdout, stderr) of that call only."""
    from ephys2tx.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def copy_data_dir(src: Path, dst: Path) -> Path:
    """A writable copy of the data directory (the shared one is read-only)."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


@pytest.fixture(autouse=True)
def _fold_cache_per_test(tmp_path_factory, monkeypatch):
    """Each test (and the commands it runs) gets an empty fold cache, never the user's."""
    monkeypatch.setenv("EPHYS2TX_FOLD_CACHE", str(tmp_path_factory.mktemp("fold_cache")))


@pytest.fixture
def writable_data_dir(data_dir, tmp_path) -> Path:
    """A fresh writable copy of the real data directory, for tests that break it."""
    return copy_data_dir(data_dir, tmp_path / "data")


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny training batches run several times faster (no spin-wait)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_openmp_thread():
    """One OpenMP thread (gradient-boosted trees): on a busy 2-core machine a second thread
    spin-waits; a 10-iteration HGB check took 12 s instead of 0.2 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="session")
def nwb_set(tmp_path_factory):
    """Generated NWB 2 cells (both layouts) and broken files, written once per session."""
    from ephys2tx.testing.nwb_fixtures import standard_fixture_set

    return standard_fixture_set(tmp_path_factory.getbasetemp() / "nwb_fixture_set")

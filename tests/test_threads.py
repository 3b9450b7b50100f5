"""Tests of the thread limits of fits (ephys2tx.models.threads)."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from ephys2tx.errors import InputError
from ephys2tx.models.threads import default_threads, limit_threads, resolve_threads


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (16, 8), (64, 8)])
def test_default_threads(cores, expected):
    assert default_threads(cores) == expected


@pytest.mark.parametrize("bad", [0, -1, 257, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(InputError, match="--threads must be a whole number"):
        resolve_threads(bad)


def test_limits_apply_inside_and_are_restored():
    import torch

    before = torch.get_num_threads()
    outside = {(p["user_api"], p["num_threads"]) for p in threadpool_info()}
    target = 3 if before != 3 else 2
    with limit_threads(target, torch=True) as n:
        assert n == target
        assert torch.get_num_threads() == target
        assert all(p["num_threads"] <= target for p in threadpool_info())
    assert torch.get_num_threads() == before
    assert {(p["user_api"], p["num_threads"]) for p in threadpool_info()} == outside


def test_train_takes_threads(data_dir, tmp_path):
    from ephys2tx.workflows import train

    seen = {}

    def progress(message):
        seen.setdefault("threads", [p["num_threads"] for p in threadpool_info()])

    result = train("human", "forest", tmp_path / "m", data_dir=data_dir, n_splits=2,
                   n_estimators=5, threads=1, progress=progress)
    assert result.path.is_dir() and all(n == 1 for n in seen["threads"])
    with pytest.raises(InputError, match="--threads"):
        train("human", "forest", tmp_path / "m2", data_dir=data_dir, threads=0)
    assert not (tmp_path / "m2").exists()

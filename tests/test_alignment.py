"""Quantile and optimal-transport alignment (mechanics) and the real-data shift experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.errors import InputError
from ephys2tx.features.alignment import align, ot_align, quantile_align


def _pair(seed=0):
    rng = np.random.RandomState(seed)
    ref = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.exponential(2.0, 500)})
    query = pd.DataFrame({"a": rng.normal(0, 1, 200) * 2 + 5, "b": rng.exponential(2.0, 200) * 0.3 + 1},
                         index=[f"q{i}" for i in range(200)])
    return ref, query


def test_quantile_alignment_matches_marginals_and_keeps_order_and_nan():
    ref, query = _pair()
    query.iloc[3, 0] = np.nan
    out = quantile_align(query, ref)
    assert out.index.equals(query.index) and np.isnan(out.iloc[3, 0])
    for col in ref:
        assert out[col].median() == pytest.approx(ref[col].median(), abs=0.15)
        ok = query[col].notna()
        assert (np.argsort(out[col][ok].to_numpy()) == np.argsort(query[col][ok].to_numpy())).all()


def test_ot_alignment_moves_query_onto_reference():
    ref, query = _pair(1)
    out = ot_align(query, ref)
    before = np.abs(query.mean() - ref.mean()).sum()
    after = np.abs(out.mean() - ref.mean()).sum()
    assert after < 0.2 * before


def test_align_errors():
    ref, query = _pair()
    with pytest.raises(InputError, match="unknown alignment"):
        align(query, ref, "magic")
    with pytest.raises(InputError, match="does not have"):
        quantile_align(query.assign(c=1.0), ref)


@pytest.mark.slow
def test_alignment_helps_on_shifted_held_out_reference(data_dir):
    """Real mouse reference, 30% held out and distorted per feature: alignment restores F1."""
    from ephys2tx.mapping import shift_experiment

    table = shift_experiment("mouse", data_dir, n_estimators=50).set_index("condition")["macro_f1"]
    assert table["shifted, no alignment"] < table["no shift"] - 0.1
    assert table["shifted + quantile alignment"] > table["shifted, no alignment"] + 0.1
    assert table["shifted + OT alignment"] > table["shifted, no alignment"] + 0.05

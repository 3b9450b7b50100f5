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


def test_ot_alignment_of_a_large_query_uses_a_subset_plan():
    ref, query = _pair(2)
    full = ot_align(query, ref)
    sub = ot_align(query, ref, max_query=50)
    assert sub.shape == query.shape and sub.index.equals(query.index)
    before = np.abs(query.mean() - ref.mean()).sum()
    assert np.abs(sub.mean() - ref.mean()).sum() < 0.3 * before
    assert np.corrcoef(sub["a"], full["a"])[0, 1] > 0.8


def test_align_errors():
    ref, query = _pair()
    with pytest.raises(InputError, match="unknown alignment"):
        align(query, ref, "magic")
    with pytest.raises(InputError, match="does not have"):
        quantile_align(query.assign(c=1.0), ref)


def _check_shift_table(table):
    f1 = table.groupby(["query", "condition"])["macro_f1"].mean()
    ref = f1["reference mix"]
    skewed = f1[next(q for q in f1.index.levels[0] if q.startswith("skewed mix"))]
    # same class mix as the reference: the distortion costs F1 and both alignments win it back
    assert ref["shifted, no alignment"] < ref["no shift"] - 0.1
    assert ref["shifted + quantile alignment"] > ref["shifted, no alignment"] + 0.1
    assert ref["shifted + OT alignment"] > ref["shifted, no alignment"] + 0.05
    # another class mix: matching the reference's distributions no longer recovers the loss
    assert skewed["shifted + quantile alignment"] < skewed["no shift"] - 0.05
    assert skewed["shifted + OT alignment"] < skewed["shifted, no alignment"]


def test_alignment_helps_on_shifted_held_out_reference(data_dir):
    """Real mouse reference, 30% held out and distorted per feature (one seed, small forest)."""
    from ephys2tx.experiments.mapping_checks import shift_experiment

    table = shift_experiment("mouse", data_dir, n_estimators=40, seeds=[0])
    assert set(table["condition"]) == {"no shift", "shifted, no alignment",
                                       "shifted + quantile alignment", "shifted + OT alignment"}
    assert table.groupby("query")["n_cells"].first()["reference mix"] == 1157
    _check_shift_table(table)


@pytest.mark.slow
@pytest.mark.parametrize("species", ["mouse", "human"])
def test_alignment_helps_over_seeds(species, data_dir):
    """The claims of docs/mapping.md, on three seeds per species."""
    from ephys2tx.experiments.mapping_checks import shift_experiment, summarise_shift

    table = shift_experiment(species, data_dir, seeds=range(3))
    _check_shift_table(table)
    assert (summarise_shift(table)["n_seeds"] == 3).all()


@pytest.mark.parametrize("method", ["quantile", "ot", "moments"])
def test_infinity_is_refused_not_made_missing(method):
    """An inf in the query came back NaN (ot: treated as missing), stayed inf (quantile) or made
    its whole column NaN (moments), without a word. Now align names the column and the cell."""
    ref, query = _pair()
    query.iloc[3, 1] = -np.inf
    with pytest.raises(InputError, match=r"column 'b' of the query to align has the value -inf "
                                         r"\(cell q3"):
        align(query, ref, method)
    ref.iloc[0, 0] = np.inf
    with pytest.raises(InputError, match=r"column 'a' of the reference to align to has the value inf"):
        align(query.fillna(0.0).clip(-9, 9), ref, method)

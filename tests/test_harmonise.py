"""Cross-species harmonisation, verified on the real bridge cells."""

import numpy as np
import pandas as pd
import pytest

from ephys2tx.errors import InputError
from ephys2tx.features.families import HUMAN_IPFX_SCHEMA
from ephys2tx.features.harmonise import (
    HARMONISED_FEATURES,
    MIN_BRIDGE_R,
    MOUSE_TO_HUMAN,
    FeatureMapping,
    bridge_verification,
    convert_mouse,
    harmonised_features,
)


@pytest.fixture(scope="module")
def verification(data_dir):
    return bridge_verification(data_dir).set_index("target")


def test_every_used_feature_verified_on_bridge_cells(verification):
    """Each feature the transfer models use reaches r >= 0.9 on the same cells in both tables."""
    for feature in HARMONISED_FEATURES:
        row = verification.loc[feature]
        assert row["n"] >= 450, f"{feature}: only {row['n']} bridge cells"
        assert row["pearson_r"] >= MIN_BRIDGE_R, f"{feature}: r = {row['pearson_r']:.3f}"
        # Units right: the typical difference is small against the feature's scale.
        assert row["median_abs_diff"] <= 0.05 * abs(row["bridge_median"]) + 1e-9, feature


def test_used_set_is_exactly_the_verified_set(verification):
    assert harmonised_features(verification.reset_index()) == list(HARMONISED_FEATURES)


def test_targets_exist_in_human_table():
    human = set(HUMAN_IPFX_SCHEMA.columns)
    assert all(m.target in human for m in MOUSE_TO_HUMAN)


def test_unit_conversion_would_be_caught(verification, data_dir):
    """Without ms -> s, tau's values are 1000x off: the median difference check fails."""
    row = verification.loc["tau"]
    assert row["median_abs_diff"] < 1e-3
    wrong = FeatureMapping("tau", "tau", scale=1.0)
    table = pd.DataFrame({"tau": [10.0, 20.0]})
    assert np.allclose(wrong.apply(table), [10.0, 20.0])
    assert np.allclose(next(m for m in MOUSE_TO_HUMAN if m.target == "tau").apply(table), [0.01, 0.02])


def test_delta_features_are_relative_to_threshold():
    table = pd.DataFrame({"Peak V (ramp) (millivolts)": [20.0], "Threshold V (ramp) (millivolts)": [-40.0]})
    mapping = next(m for m in MOUSE_TO_HUMAN if m.target == "peak_deltav_ramp")
    assert mapping.apply(table).iloc[0] == pytest.approx(60.0)


def test_missing_source_column_is_input_error():
    with pytest.raises(InputError, match="needs column"):
        convert_mouse(pd.DataFrame({"x": [1.0]}))

"""Median imputation and standardisation: the checks of values that cannot be standardised."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.errors import InputError
from ephys2tx.models.standardise import check_feature_values, fit_standardiser


def test_infinity_is_named_by_column_and_row():
    X = pd.DataFrame({"tau": [1.0, 2.0, np.nan], "rin": [1.0, np.inf, -np.inf]}, index=["a", "b", "c"])
    with pytest.raises(InputError, match=r"feature column 'rin' has the value inf \(row 'b'; 2 such "
                                         r"value\(s\) in it; 1 such column\(s\)\)"):
        check_feature_values(X)
    with pytest.raises(InputError, match=r"feature column 'y' .*\(row 1, counted from 0"):
        check_feature_values(X.to_numpy(), ["x", "y"])
    check_feature_values(X.fillna(0.0).iloc[:1])  # NaN and finite values pass
    check_feature_values(pd.DataFrame({"s": ["text"]}))  # text is left to the callers' checks


def test_fit_standardiser_names_a_column_too_large():
    X = np.random.RandomState(0).normal(size=(20, 2))
    X[:, 1] *= 1e300
    with pytest.raises(InputError, match=r"feature column 'big' has values too large"):
        fit_standardiser(X, ["small", "big"])


def test_a_table_without_feature_columns_is_named():
    """Every estimator failed with numpy's 'at least one array or dtype is required'."""
    with pytest.raises(InputError, match=r"the table has no feature column: 0 feature\(s\) \(shape=\(3, 0\)\) while a minimum of 1 is required"):
        check_feature_values(pd.DataFrame(index=range(3)))

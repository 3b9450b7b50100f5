"""Layer notations, layer-conditional class priors with fallbacks, explicit class priors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx import CLASSES
from ephys2tx.data.layers import (LayerTable, is_unknown_layer, layer_priors, layer_tables,
                                  parse_class_prior, parse_layer, user_class_prior)
from ephys2tx.errors import InputError


@pytest.mark.parametrize("value,expected", [
    ("L1", {1}), ("1", {1}), (1, {1}), (1.0, {1}), ("layer 1", {1}), ("L2/3", {2, 3}), ("2/3", {2, 3}),
    ("2_3", {2, 3}), ("2-3", {2, 3}), ("L23", {2, 3}), ("L6a", {6}), ("6b", {6}), ("5_6", {5, 6}),
    ("VISp2/3", {2, 3}), ("VISpm1", {1}), ("TEa5", {5}), ("VISp6a", {6}),
    # Roman numerals were 'not a cortical layer'
    ("I", {1}), ("layer I", {1}), ("II/III", {2, 3}), ("Layer II-III", {2, 3}), ("IV", {4}),
    ("V", {5}), ("Va", {5}), ("VIb", {6}), ("V/VI", {5, 6}),
])
def test_parse_layer(value, expected):
    assert parse_layer(value) == frozenset(expected)


@pytest.mark.parametrize("value", ["VISp", "L", "foo", "", None, np.nan, "7", "L0", "3/2", "VII", "III/II",
                                   "iiii", "vi sp"])
def test_not_a_layer(value):
    assert parse_layer(value) is None


@pytest.mark.parametrize("value", ["unknown", "Unknown", " UNK ", "NA", "n/a", "?", "-", "none", "",
                                   None, np.nan, pd.NA])
def test_a_label_saying_unknown_is_no_layer(value):
    """A layer column with `unknown` (or NA, ?, -) for cells whose layer was not recorded stopped
    the command ('unknown' is not a cortical layer); it is no layer, as an empty cell is."""
    assert is_unknown_layer(value)
    own = LayerTable("own", (frozenset({1}),) * 40, ("Lamp5",) * 40)
    priors, _, known = layer_priors(["L1", value], [own], CLASSES)
    assert known.tolist() == [True, False] and np.isnan(priors[1]).all()


@pytest.mark.parametrize("value", ["L1", "1", "deep", "white matter", "L7"])
def test_a_layer_or_a_wrong_label_is_not_unknown(value):
    assert not is_unknown_layer(value)


def test_layer_option_saying_unknown_is_refused(data_dir):
    """`--layer unknown` for every cell is no prior at all: refused, saying to leave it out."""
    with pytest.raises(InputError, match=r"--layer 'unknown' is not a cortical layer.*leave --layer out"):
        user_class_prior(CLASSES, "mouse", 3, layer="unknown", data_dir=data_dir)


def test_fallback_to_the_next_table_when_too_few_cells():
    own = LayerTable("own", (frozenset({1}),) * 3 + (frozenset({2, 3}),) * 40, ("Vip",) * 3 + ("Pvalb",) * 40)
    other = LayerTable("other", (frozenset({1}),) * 50, ("Lamp5",) * 45 + ("Vip",) * 5)
    priors, notes, known = layer_priors(["L1", "L3", None, "L5"], [own, other], CLASSES)
    assert known.tolist() == [True, True, False, False]
    assert priors[0].argmax() == CLASSES.index("Lamp5") and "fallback" in notes[0] and "other" in notes[0]
    assert priors[1].argmax() == CLASSES.index("Pvalb") and "own" in notes[1]
    np.testing.assert_allclose(priors[0], (np.array([45, 0, 0, 5]) + 1) / 54)
    assert any("no reference has" in n for n in notes)
    with pytest.raises(InputError, match="not a cortical layer"):
        layer_priors(["deep"], [own], CLASSES)
    assert not layer_priors(["deep"], [own], CLASSES, strict=False)[2].any()


def test_real_layer_tables_human_layer1_falls_back_to_mouse(data_dir):
    tables = layer_tables("human", data_dir)
    assert tables[0].source.startswith("human")
    priors, notes, known = layer_priors(["1", "L2/3"], tables, CLASSES)
    assert known.all()
    assert "mouse VISp" in notes[0] and "fallback" in notes[0]
    assert priors[0][CLASSES.index("Lamp5")] > 0.75
    assert "human" in notes[1] and "fallback" not in notes[1]
    mouse = layer_tables("mouse", data_dir, exclude=())
    p, n, _ = layer_priors(["L1"], mouse, CLASSES)
    assert "fallback" not in n[0] and p[0].argmax() == CLASSES.index("Lamp5")


def test_a_prior_in_percent_is_read():
    """`--prior Lamp5=60%,Vip=40%` was refused ('60%' is not a number)."""
    np.testing.assert_allclose(parse_class_prior("Lamp5=60%, Vip=40 %", CLASSES),
                               parse_class_prior("Lamp5=0.6,Vip=0.4", CLASSES))
    with pytest.raises(InputError, match="is not a number"):
        parse_class_prior("Lamp5=%", CLASSES)


def test_parse_class_prior():
    np.testing.assert_allclose(parse_class_prior("Lamp5=0.6, vip=0.3,Sst=0.1", CLASSES), [0.6, 0, 0.1, 0.3])
    np.testing.assert_allclose(parse_class_prior("Lamp5=2,Vip=2", CLASSES), [0.5, 0, 0, 0.5])
    for bad, match in (("Sncg=0.5", "unknown class"), ("Lamp5", "look like"), ("Lamp5=x", "not a number"),
                       ("Lamp5=-1", "non-negative"), ("Lamp5=0", "every class 0"),
                       (",,,", "no entries"), ("  ", "no entries")):
        with pytest.raises(InputError, match=match):
            parse_class_prior(bad, CLASSES)


def test_user_class_prior_needs_one_source(data_dir):
    assert user_class_prior(CLASSES, "mouse", 3) == (None, [])
    with pytest.raises(InputError, match="one of"):
        user_class_prior(CLASSES, "mouse", 3, layer="L1", prior="Lamp5=1")
    rows, notes = user_class_prior(CLASSES, "mouse", 3, layer_values=["L1", None, "L5"], data_dir=data_dir)
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1]).all() and np.isfinite(rows[2]).all()
    assert any("keep the reference's class mix" in n for n in notes)

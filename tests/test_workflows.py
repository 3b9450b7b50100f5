"""The library calls train / predict / map_cells refuse bad arguments before any work, with an
InputError naming the argument (a notebook user's mistakes: a DataFrame for a path, a numpy
Generator or None for the seed, a number as text)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ephys2tx.errors import InputError
from ephys2tx.workflows import map_cells, predict, train


@pytest.mark.parametrize("name, value, pattern", [
    ("random_state", np.random.default_rng(0), r"random_state must be a whole number from 0 to "
                                               r"4294967295 \(a fixed seed.*got Generator"),
    ("random_state", None, r"random_state must be a whole number .*got None"),
    ("random_state", 2**40, r"random_state must be a whole number from 0 to 4294967295"),
    ("n_splits", "3", r"n_splits must be a whole number of at least 2, got '3'"),
    ("n_splits", True, r"n_splits must be a whole number of at least 2, got True"),
    ("n_estimators", 0, r"n_estimators must be a whole number of at least 1, got 0"),
    ("max_epochs", 2.5, r"max_epochs must be a whole number of at least 1, got 2\.5"),
])
def test_train_refuses_bad_numbers_before_reading_anything(name, value, pattern, tmp_path):
    """These were a TypeError deep in the fold splitter, or scikit-learn's error after the data
    files were read and checked."""
    with pytest.raises(InputError, match=pattern):
        train("mouse", "forest", tmp_path / "model", data_dir=tmp_path / "no-data", **{name: value})
    assert not (tmp_path / "model").exists()


def test_train_accepts_numpy_integers(tmp_path):
    """A numpy integer is a whole number: it gets as far as the (missing) data directory."""
    with pytest.raises(InputError, match="no-data does not exist"):
        train("mouse", "forest", tmp_path / "model", data_dir=tmp_path / "no-data",
              n_splits=np.int64(3), random_state=np.uint32(7))


def test_a_dataframe_for_a_path_says_to_save_it(tmp_path):
    """A DataFrame as input_path was a TypeError from pathlib."""
    frame = pd.DataFrame({"cell_id": ["a"], "tau": [10.0]})
    with pytest.raises(InputError, match=r"input_path must be a path, got DataFrame; save the table "
                                         r"first \(e\.g\. frame\.to_csv"):
        predict(tmp_path / "model", frame, tmp_path / "out.csv")
    with pytest.raises(InputError, match="input_path must be a path, got DataFrame"):
        map_cells(frame, "mouse", tmp_path / "mapped")
    with pytest.raises(InputError, match=r"out must be a path, got int; pass a str or pathlib\.Path"):
        predict(tmp_path / "model", tmp_path / "cells.csv", 3)
    with pytest.raises(InputError, match="random_state must be a whole number"):
        predict(tmp_path / "model", tmp_path / "cells.csv", tmp_path / "out.csv", random_state=None)
    with pytest.raises(InputError, match="n_estimators must be a whole number of at least 1, got 0"):
        map_cells(tmp_path / "cells.csv", "mouse", tmp_path / "mapped", n_estimators=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call, pattern", [
    (lambda p: predict(p / "model", p / "cells.csv", p / "out.csv", overwrite="no"),
     r"overwrite must be True or False, got 'no' \(a non-empty string is true in Python\)"),
    (lambda p: predict(p / "model", p / "cells.csv", p / "out.csv", force="false"),
     r"force must be True or False, got 'false'"),
    (lambda p: predict(p / "model", p / "cells.csv", p / "out.csv", verify=None),
     r"verify must be True or False, got None"),
    (lambda p: map_cells(p / "cells.csv", "mouse", p / "mapped", overwrite="no"),
     r"overwrite must be True or False, got 'no'"),
    (lambda p: train("mouse", "forest", p / "model", data_dir=p / "no-data", overwrite="no"), r"overwrite must be True or False"),
    (lambda p: predict(p / "model", p / "cells.csv", p / "out.csv", id_column=5),
     r"id_column must be a str \(e\.g\. 'cell_id'\) or None, got int 5"),
    (lambda p: predict(p / "model", p / "cells.csv", p / "out.csv", prior={"Lamp5": 1}),
     r"prior must be a str \(e\.g\. 'Lamp5=0\.6,Vip=0\.4'\) or None, got dict"),
    (lambda p: map_cells(p / "cells.csv", "mouse", p / "mapped", layer_column=["layer"]),
     r"layer_column must be a str \(e\.g\. 'layer'\) or None, got list"),
    (lambda p: train("mouse", "forest", p / "model", data_dir=p / "no-data", progress=5),
     r"progress must be a function taking one message \(e\.g\. print\) or None, got int"),
    (lambda p: train("mouse", "forest", p / "model", data_dir=p / "no-data", max_epochs=3),
     r"--max-epochs sets the epochs of --model bilstm; --model forest has none"),
    (lambda p: train("human", "transfer", p / "model", data_dir=p / "no-data", max_epochs=3), r"--model transfer has none"),
])
def test_flags_texts_and_options_of_another_model_are_refused_by_name(call, pattern, tmp_path):
    """overwrite="no" (a true string) replaced an existing model folder or predictions table;
    id_column=5 was an AttributeError; max_epochs for the forest or the stacked transfer model
    was ignored without a word."""
    with pytest.raises(InputError, match=pattern):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []

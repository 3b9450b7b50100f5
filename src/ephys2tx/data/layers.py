"""Cortical layers as prior knowledge: a layer's class mix in the reference, as a class prior.

An experimenter knows the layer of every cell they patched. The references
carry one per cell (mouse VISp ``Cortical layer``: L1, L2/3, L4, L5, L6a, L6b;
human ``Cortical_layer``: 1, 2, 2_3, 3, 4, 5, 5_6, 6; the mouse L1 bridge's
``structure``: VISp1, VISp2/3, ...). :func:`parse_layer` reads any of these
notations as a set of layer numbers, and :class:`LayerTable` turns a layer into
the class mix of the reference cells in it (cells whose layer set overlaps the
query's), with add-one smoothing.

:func:`layer_priors` tries the tables in order (the reference's own first, then
the other species' / datasets') and takes the first with at least ``min_cells``
cells in that layer, saying which it used: the human table has 1 layer-1 cell
after QC, so a human layer-1 query falls back to the mouse VISp layer-1 mix.
The layer is never a model input: it only reweights the model's probabilities
(:func:`ephys2tx.models.label_shift.apply_prior`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ephys2tx.errors import InputError

__all__ = ["LayerTable", "UNKNOWN_LAYER_LABELS", "is_unknown_layer", "layer_priors", "layer_tables",
           "parse_class_prior", "parse_layer", "user_class_prior"]

#: A table must have at least this many cells in a layer for its class mix to be used.
MIN_LAYER_CELLS = 30

_RANGE = re.compile(r"^(\d)\s*[/_\-]\s*(\d)$")
_ROMAN_DIGITS = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_ROMAN = re.compile(r"iii|ii|iv|vi|i|v")
_ROMAN_LABEL = re.compile(r"(?:iii|ii|iv|vi|i|v)[ab]?(?:\s*[/_\-]\s*(?:iii|ii|iv|vi|i|v)[ab]?)?")


#: Labels saying that a cell's layer is not known: no layer, as an empty cell is.
UNKNOWN_LAYER_LABELS = frozenset({"unknown", "unk", "na", "n/a", "nan", "none", "?", "-", "--",
                                  "nd", "n.d.", "not known", "unassigned", "unclear"})


def is_unknown_layer(value) -> bool:
    """Whether a layer label says "no layer": None, NaN, blank, or one of
    :data:`UNKNOWN_LAYER_LABELS` (``unknown``, ``NA``, ``?``, ...; any case)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):  # NaN, pd.NA, NaT
        return True
    text = str(value).strip().lower()
    return not text or text in UNKNOWN_LAYER_LABELS


def parse_layer(value) -> frozenset | None:
    """Layer numbers of a layer label, or None if it is not a layer.

    ``"L1"``, ``"1"``, ``"layer 1"``, ``"I"`` -> {1}; ``"L2/3"``, ``"2/3"``, ``"2_3"``, ``"2-3"``,
    ``"L23"``, ``"II/III"`` -> {2, 3}; ``"L6a"``, ``"6b"`` -> {6}; ``"5_6"`` -> {5, 6}; an area
    with a layer suffix (``"VISp2/3"``, ``"VISpm1"``, ``"TEa5"``) -> its layer.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    if isinstance(value, (int, np.integer)) or re.fullmatch(r"\d+(\.0)?", text):
        n = int(float(text))
        return frozenset({n}) if 1 <= n <= 6 else None
    low = text.lower().replace("layer", "").strip()
    if _ROMAN_LABEL.fullmatch(low):  # II/III, V, VIa, L-less Roman numerals
        return parse_layer(_ROMAN.sub(lambda m: str(_ROMAN_DIGITS[m.group(0)]), low))
    low = re.sub(r"^l\s*", "", low)
    low = re.sub(r"(?<=\d)[ab]$", "", low)
    if re.fullmatch(r"[1-6]", low):
        return frozenset({int(low)})
    if low == "23":
        return frozenset({2, 3})
    m = _RANGE.match(low)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if 1 <= a <= b <= 6:
            return frozenset(range(a, b + 1))
        return None
    m = re.match(r"^[a-z]+?(\d(?:\s*/\s*\d)?)([ab])?$", text.lower())  # area + layer: VISp2/3
    if m:
        return parse_layer(m.group(1))
    return None


def _format(layers: frozenset) -> str:
    layers = sorted(layers)
    return f"L{layers[0]}" if len(layers) == 1 else "L" + "/".join(map(str, layers))


@dataclass(frozen=True)
class LayerTable:
    """Layer and class of every cell of one labelled dataset."""

    source: str
    layers: tuple          # frozenset or None per cell
    labels: tuple          # class per cell

    @classmethod
    def from_series(cls, source: str, layers: pd.Series, labels: pd.Series) -> LayerTable:
        """Cells with a parsable layer and a label (aligned on the index)."""
        both = pd.DataFrame({"layer": layers, "label": labels}).dropna(subset=["label"])
        parsed = [parse_layer(v) for v in both["layer"]]
        keep = [p is not None for p in parsed]
        return cls(source, tuple(p for p, k in zip(parsed, keep) if k),
                   tuple(both["label"].to_numpy()[np.asarray(keep, bool)]))

    def counts(self, layers: frozenset, classes) -> np.ndarray:
        """Cells of each class whose layer overlaps ``layers``."""
        hit = [bool(cell & layers) for cell in self.layers]
        sel = np.asarray(self.labels, dtype=object)[np.asarray(hit, bool)] if hit else np.array([])
        return np.array([np.sum(sel == c) for c in classes], dtype=float)


def layer_tables(species: str, data_dir=None, *, verify: bool = True,
                 exclude=()) -> list[LayerTable]:
    """Layer tables for a ``species`` reference: its own first, then the fallbacks.

    Mouse: VISp, then the mouse L1 bridge, then human. Human: human, then
    mouse VISp, then the bridge. Cells whose id is in ``exclude`` are left out
    (the benchmark leaves its query cells out).
    """
    from ephys2tx.data.datasets import load_dataset

    exclude = set(map(str, exclude))
    visp = load_dataset("mouse_visp", data_dir, verify=verify)
    human = load_dataset("human", data_dir, verify=verify)
    bridge = load_dataset("mouse_l1_bridge", data_dir, verify=verify)

    def table(name, ds, column):
        keep = ~ds.labels.index.astype(str).isin(exclude)
        return LayerTable.from_series(name, ds.metadata.loc[keep, column], ds.labels[keep])

    tables = {"mouse VISp": table("mouse VISp (Gouwens 2020)", visp, "Cortical layer"),
              "human": table("human (Lee, Dalley 2023)", human, "Cortical_layer"),
              "bridge": table("mouse L1 bridge (Chartrand 2023)", bridge, "structure")}
    order = {"mouse": ("mouse VISp", "bridge", "human"), "human": ("human", "mouse VISp", "bridge")}
    if species not in order:
        raise InputError(f"layer priors exist for mouse or human references, not {species!r}.")
    return [tables[k] for k in order[species]]


def layer_priors(layers, tables: list[LayerTable], classes, *, min_cells: int = MIN_LAYER_CELLS,
                 smoothing: float = 1.0, strict: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One class prior per cell from its layer.

    Parameters
    ----------
    layers : sequence
        Layer label per cell (any notation of :func:`parse_layer`; None/NaN: unknown).
    tables : list of LayerTable
        Tried in order; the first with >= ``min_cells`` cells in the layer is used.
    classes : list of str
    min_cells : int
    smoothing : float
        Added to every class count (add-one by default).
    strict : bool
        A label that is not a layer is an error (else: unknown layer, no prior).

    Returns
    -------
    (priors, notes, known)
        ``priors`` (n, K): the layer's class mix, NaN rows where the layer is
        unknown or no table has enough cells; ``notes``: one line per distinct
        layer saying which table (and how many cells) it came from, or why
        none; ``known``: bool per cell.

    Raises
    ------
    InputError
        A layer label that is not a layer.
    """
    layers = list(layers)
    classes = list(classes)
    priors = np.full((len(layers), len(classes)), np.nan)
    notes = []
    cache: dict = {}
    for i, value in enumerate(layers):
        if is_unknown_layer(value):
            continue
        parsed = parse_layer(value)
        if parsed is None:
            if not strict:
                continue
            raise InputError(f"layer {value!r} is not a cortical layer; use e.g. L1, L2/3, 4, L5, "
                             "L6a, 5_6.")
        if parsed not in cache:
            chosen = None
            tried = []
            for t in tables:
                counts = t.counts(parsed, classes)
                tried.append(f"{t.source}: {int(counts.sum())}")
                if counts.sum() >= min_cells:
                    chosen = (t, counts)
                    break
            if chosen is None:
                cache[parsed] = None
                notes.append(f"layer {_format(parsed)}: no reference has >= {min_cells} labelled cells "
                             f"in it ({'; '.join(tried)}); no layer prior for these cells.")
            else:
                t, counts = chosen
                mix = (counts + smoothing) / (counts + smoothing).sum()
                cache[parsed] = mix
                own = int(tables[0].counts(parsed, classes).sum())
                fallback = "" if t is tables[0] else (
                    f" (fallback: {tables[0].source} has only {own} labelled "
                    f"cell{'' if own == 1 else 's'} there, fewer than {min_cells})")
                notes.append(f"layer {_format(parsed)}: class mix of {int(counts.sum())} cells of "
                             f"{t.source}{fallback}: "
                             + ", ".join(f"{c} {v:.0%}" for c, v in zip(classes, mix)))
        if cache[parsed] is not None:
            priors[i] = cache[parsed]
    known = np.isfinite(priors).all(axis=1)
    return priors, notes, known


def parse_class_prior(text: str, classes) -> np.ndarray:
    """``"Lamp5=0.6,Vip=0.3,Sst=0.05,Pvalb=0.05"`` -> a normalised class mix.

    Classes left out get 0 before the 1% floor that every prior gets when it is
    applied (so no class becomes impossible). Raises InputError on an unknown
    class, a non-number, a negative value or an all-zero mix.
    """
    classes = list(classes)
    values = dict.fromkeys(classes, 0.0)
    lookup = {c.lower(): c for c in classes}
    seen: set = set()
    for part in str(text).split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"--prior entry {part.strip()!r} must look like Lamp5=0.6.")
        name, _, number = part.partition("=")
        cls = lookup.get(name.strip().lower())
        if cls is None:
            raise InputError(f"--prior names unknown class {name.strip()!r}; classes are "
                             f"{', '.join(classes)}.")
        if cls in seen:
            raise InputError(f"--prior names {cls} twice; give each class once, e.g. "
                             "Lamp5=0.6,Vip=0.4.")
        seen.add(cls)
        try:  # Lamp5=60% is 60 of 100: only ratios matter
            v = float(number.strip().removesuffix("%"))
        except ValueError:
            raise InputError(f"--prior value {number.strip()!r} for {cls} is not a number.") from None
        if not np.isfinite(v) or v < 0:
            raise InputError(f"--prior value for {cls} must be a non-negative number, got {number.strip()!r}.")
        values[cls] = v
    if not seen:
        raise InputError(f"--prior {str(text)!r} has no entries; give class proportions, e.g. "
                         "Lamp5=0.6,Vip=0.3,Sst=0.05,Pvalb=0.05.")
    mix = np.array([values[c] for c in classes])
    if mix.max() > 0:
        mix = mix / mix.max()  # proportions: only ratios matter, and 1e308 + 1e308 must not overflow
    if mix.sum() <= 0:
        raise InputError("--prior gives every class 0; give at least one positive proportion.")
    return mix / mix.sum()


def user_class_prior(classes, species: str, n_cells: int, *, layer: str | None = None,
                     layer_values=None, prior: str | None = None, data_dir=None,
                     verify: bool = True) -> tuple[np.ndarray | None, list[str]]:
    """The class prior a user gives: ``--prior``, ``--layer`` or a per-cell layer column.

    Parameters
    ----------
    classes : list of str
        The model's classes.
    species : str
        The reference (``mouse``, ``human``; ``both`` uses the mouse tables first).
    n_cells : int
    layer : str, optional
        One layer for every cell (``--layer``).
    layer_values : sequence, optional
        One layer per cell (the ``--layer-column`` values, in cell order).
    prior : str, optional
        An explicit class mix (``--prior Lamp5=0.6,...``), for every cell.
    data_dir : path, optional
        Where the reference metadata (layers) is read from.

    Returns
    -------
    (rows, notes)
        ``rows``: (n_cells, K) prior per cell (NaN rows: no prior for that
        cell), or None when the user gave nothing; ``notes``: what was used.
    """
    given = [name for name, v in (("--layer", layer), ("--layer-column", layer_values),
                                  ("--prior", prior)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give one of --layer, --layer-column and --prior, not {' and '.join(given)}.")
    if not given:
        return None, []
    for name, value in (("--layer", layer), ("--prior", prior)):
        if value is not None and not str(value).strip():
            raise InputError(f"{name} is empty; give e.g. --layer L1 or --prior Lamp5=0.6,Vip=0.4.")
    if prior is not None:
        mix = parse_class_prior(prior, classes)
        return np.tile(mix, (n_cells, 1)), [
            "explicit class prior (--prior): " + ", ".join(f"{c} {v:.0%}" for c, v in zip(classes, mix))]
    if layer is not None and parse_layer(layer) is None:
        raise InputError(f"--layer {layer!r} is not a cortical layer; use e.g. L1, L2/3, 4, L5, L6a, "
                         "5_6 (leave --layer out when the layer is not known).")
    values = [layer] * n_cells if layer is not None else list(layer_values)
    if len(values) != n_cells:
        raise InputError(f"got {len(values)} layer values for {n_cells} cells.")
    tables = layer_tables("mouse" if species == "both" else species, data_dir, verify=verify)
    rows, notes, known = layer_priors(values, tables, classes)
    if not known.any():
        notes.append("no cell has a usable layer prior; predictions are prior-free.")
    elif not known.all():
        notes.append(f"{int((~known).sum())} of {n_cells} cells have no layer (empty or unknown) or no reference "
                     "mix for it; they keep the reference's class mix.")
    return rows, notes

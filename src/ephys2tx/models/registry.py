"""Model registry: short stable names -> estimator factories.

The names are the ``model`` keys of ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ephys2tx.errors import InputError
from ephys2tx.models.baselines import make_hgb, make_logreg, make_rf, make_spca_rf

BASELINE_MODELS = ("spca_rf", "rf", "hgb", "logreg")
#: Models of the mouse five-subclass block (Sncg as a fifth class, for Gouwens 2020), and of a
#: quick look at it.
FIVE_CLASS_MODELS = ("spca_rf", "rf", "hgb", "logreg")
BILSTM_MODELS = ("bilstm", "bilstm_nosmote", "bilstm_softmax", "bilstm_meanpool", "mlp")
#: Mouse -> human transfer designs and their same-architecture human-only twins (human only).
TRANSFER_MODELS = ("transfer_a", "transfer_b", "transfer_c", "transfer_d", "transfer_a_human",
                   "transfer_b_human")

#: A quick look runs each model family once, on the (species, split) block where it costs least,
#: beside the reference ``spca_rf`` of every block: no BiLSTM ablations, and of the transfer
#: designs the neural one with all features (b), its twin, and the stacking one (d).
QUICK_BLOCK_MODELS = {
    ("mouse", "stratified"): ("spca_rf", "rf", "logreg"),
    ("human", "stratified"): ("spca_rf", "hgb", "logreg", "bilstm", "mlp", "transfer_b",
                              "transfer_d", "transfer_b_human"),
    ("human", "donor"): ("spca_rf", "hgb", "logreg"),
    ("mouse_5class", "stratified"): ("spca_rf", "hgb"),
}
QUICK_MODELS = ("spca_rf", "rf", "hgb", "logreg", "bilstm", "mlp")
QUICK_TRANSFER_MODELS = ("transfer_b", "transfer_d", "transfer_b_human")
QUICK_FIVE_CLASS_MODELS = QUICK_BLOCK_MODELS[("mouse_5class", "stratified")]

#: Transfer model -> its same-architecture human-only baseline.
TRANSFER_TWINS = {"transfer_a": "transfer_a_human", "transfer_b": "transfer_b_human",
                  "transfer_c": "transfer_b_human", "transfer_d": "hgb"}

#: One-line descriptions, used in the report.
DESCRIPTIONS = {
    "spca_rf": "standardise -> per-family sparse PCA -> class-balanced random forest (Gouwens 2020)",
    "rf": "class-balanced random forest on the plain features",
    "hgb": "class-balanced histogram gradient-boosted trees on the plain features (human: 100 or "
           "300 iterations, chosen per outer fold by inner CV; mouse: 100, the library default; "
           "quick: 50)",
    "logreg": "class-balanced logistic regression on standardised features",
    "bilstm": "family tokens -> BiLSTM -> attention pooling, SMOTE, ArcFace (full model)",
    "bilstm_nosmote": "full model without SMOTE",
    "bilstm_softmax": "full model with a softmax cross-entropy head instead of ArcFace",
    "bilstm_meanpool": "full model with mean pooling instead of attention",
    "mlp": "MLP on the flat features (same preprocessing, SMOTE and ArcFace)",
    "transfer_a": "(a) shared BiLSTM encoder on the 21 harmonised features, mouse + human heads, "
                  "joint training then human fine-tuning",
    "transfer_b": "(b) per-species family adapters (all features of each species) into a shared "
                  "family-token BiLSTM encoder, two heads, joint training then human fine-tuning",
    "transfer_c": "(c) design (b) plus a class-conditional MMD alignment loss between species "
                  "embeddings during joint training",
    "transfer_d": "(d) mouse-view stacking: a mouse-only classifier on the 21 harmonised features "
                  "reads each human cell (z-scored or quantile-normalised per species); its "
                  "log-probabilities join the 93 human features of class-balanced gradient-boosted "
                  "trees (human: normalisation and iterations chosen per outer fold by inner CV)",
    "transfer_a_human": "same architecture as (a), human cells only (21 harmonised features)",
    "transfer_b_human": "same architecture as (b)/(c), human cells only (all 93 features)",
}


def family_positions(families: Mapping[str, Sequence[str]], columns: Sequence[str]) -> dict[str, list[int]]:
    """Family map with column names replaced by positions in ``columns``.

    Raises
    ------
    InputError
        ``families`` is not a mapping, or names a column that ``columns`` lacks.
    """
    if not isinstance(families, Mapping):
        raise InputError(f"families must be a mapping family -> column names (e.g. "
                         f"dataset.families), got {type(families).__name__}.")
    where = {c: i for i, c in enumerate(columns)}
    for fam, cols in families.items():
        absent = [c for c in cols if c not in where]
        if absent:
            raise InputError(f"feature family {fam!r} names column {absent[0]!r}, which is not among "
                             f"the {len(where)} columns given ({len(absent)} such); pass the "
                             "table's columns (e.g. list(dataset.features.columns)).")
    return {fam: [where[c] for c in cols] for fam, cols in families.items()}


#: Epoch cap of the neural models in quick mode.
QUICK_MAX_EPOCHS = 5

#: Choices made per outer fold by inner cross-validation on human cells
#: (:class:`~ephys2tx.models.selection.InnerCVSelector`): candidates, the default first.
#: Boosting iterations (full run; quick run: one fixed value, so nothing to choose); design (d)'s
#: alignment of human to mouse cells.
BOOSTING_ITERATIONS = ((100, 300), (50,))
TRANSFER_D_ALIGNMENTS = ("zscore", "quantile")
#: Inner folds of those choices (full run; quick run).
INNER_SPLITS = 3
QUICK_INNER_SPLITS = 2


def nested_choice(name: str, *, random_state: int = 0, quick: bool = False):
    """The selector that makes model ``name``'s choices by inner CV, or None if it has none.

    ``hgb``: the number of boosting iterations; ``transfer_d``: the alignment
    of the human cells to the mouse model's space and, as for ``hgb``, the
    boosting iterations of its human classifier (so that design (d) and its
    human-only twin get the same freedom).
    """
    from ephys2tx.models.selection import InnerCVSelector

    iterations = BOOSTING_ITERATIONS[int(bool(quick))]
    if name == "hgb" and len(iterations) > 1:
        candidates = [(f"max_iter={n}", make_hgb(random_state=random_state, max_iter=n))
                      for n in iterations]
    elif name == "transfer_d":
        from ephys2tx.models.transfer import MousePriorClassifier

        candidates = [(f"alignment={a}" + (f", max_iter={n}" if len(iterations) > 1 else ""),
                       MousePriorClassifier(alignment=a, max_iter=n, random_state=random_state))
                      for a in TRANSFER_D_ALIGNMENTS for n in iterations]
    else:
        return None
    return InnerCVSelector(candidates, inner_splits=QUICK_INNER_SPLITS if quick else INNER_SPLITS,
                           random_state=random_state)


def _quick_epochs(estimator, quick: bool):
    if quick and "max_epochs" in estimator.get_params():
        estimator.set_params(max_epochs=min(estimator.get_params()["max_epochs"], QUICK_MAX_EPOCHS))
    return estimator


def make_model(name: str, families: Mapping[str, Sequence[str]], columns: Sequence[str], *,
               random_state: int = 0, quick: bool = False, species: str | None = None):
    """A fresh, unfitted estimator for model ``name``.

    Parameters
    ----------
    name : str
        One of :data:`BASELINE_MODELS`, :data:`BILSTM_MODELS` or :data:`TRANSFER_MODELS`.
    families : mapping
        Family -> column names.
    columns : sequence of str
        Column order of the input table.
    random_state : int
    quick : bool
        A fast look: 100 trees per forest, 50 boosting iterations, at most
        :data:`QUICK_MAX_EPOCHS` epochs.
    species : str, optional
        ``"human"``: ``hgb`` and ``transfer_d`` make their choices by inner CV
        (:func:`nested_choice`), as the study scores them (quick: the
        iterations are fixed, only design (d)'s alignment is chosen). Otherwise
        the fixed defaults (mouse: library defaults, chosen with no labels).
    """
    if name not in BASELINE_MODELS + BILSTM_MODELS + TRANSFER_MODELS:
        raise InputError(f"unknown model {name!r}; choose from "
                         f"{', '.join(BASELINE_MODELS + BILSTM_MODELS + TRANSFER_MODELS)}.")
    if species == "human":
        nested = nested_choice(name, random_state=random_state, quick=quick)
        if nested is not None:
            return nested
    positions = family_positions(families, columns)
    n_trees = 100 if quick else 500
    boosting = {"max_iter": BOOSTING_ITERATIONS[1][0]} if quick else {}
    factories: dict[str, Callable[[], object]] = {
        "spca_rf": lambda: make_spca_rf(positions, n_estimators=n_trees, random_state=random_state),
        "rf": lambda: make_rf(n_estimators=n_trees, random_state=random_state),
        "hgb": lambda: make_hgb(random_state=random_state, **boosting),
        "logreg": lambda: make_logreg(random_state=random_state),
    }
    if name in factories:
        return factories[name]()
    if name in TRANSFER_MODELS:
        from ephys2tx.models.transfer import transfer_models

        return _quick_epochs(transfer_models(random_state)[name], quick)
    from ephys2tx.models.bilstm import bilstm_ablation_models  # BILSTM_MODELS (checked above)

    return _quick_epochs(bilstm_ablation_models(positions, random_state)[name], quick)

"""Mouse -> human transfer: a shared family-token encoder with two species heads.

Four designs: three neural ones in one estimator
(:class:`MouseHumanTransferClassifier`) and a stacking one
(:class:`MousePriorClassifier`):

``design="harmonised"`` (a)
    Both species enter through the same 21 harmonised IPFX features
    (:data:`~ephys2tx.features.harmonise.HARMONISED_FEATURES`, verified on the
    bridge cells), grouped by the human family schema. The whole encoder
    (token projections, BiLSTM, attention, embedding) is shared; each species
    has its own head. This is the seed study's recipe.
``design="adapters"`` (b)
    Each species keeps all its features. Per species and family, an input
    adapter (a linear layer) turns that species' columns into the shared
    family token; a family that a species does not measure (mouse: chirp,
    depolarising sag, hero AP shape, spike-train ratios) gets a learned
    "missing" token. Tokens, BiLSTM, attention and embedding are shared.
``alignment="mmd"`` (c, with either design)
    A class-conditional maximum mean discrepancy between mouse and human
    embeddings of the same subclass is added to the joint loss, pulling the
    species together class by class rather than only through shared weights.
design (d), :class:`MousePriorClassifier`
    A classifier trained on mouse cells alone reads every human cell (its
    harmonised features aligned to the mouse distribution); its
    log-probabilities join the human features of a human classifier
    (gradient-boosted trees), which learns where the mouse view helps.

Training: joint phase (human loss + ``source_weight`` x mouse loss [+
``alignment_weight`` x MMD]) with early stopping on an inner stratified
validation split of the *human* training rows, then a human-only fine-tuning
phase at ``finetune_lr_factor`` x the learning rate, again early-stopped on
the same inner split; temperature scaling on that split. Preprocessing
(median imputation, standardisation) is per species and fitted on the
training rows only; SMOTE oversamples the human inner-train rows. The
neural designs' settings are fixed defaults set before any search on human
cells; design (d)'s alignment is chosen by the study per outer fold, by inner
cross-validation (``docs/transfer.md``).

Usage follows the scikit-learn contract, with the mouse data as fit
parameters (mouse cells are always training data)::

    model.fit(X_human, y_human, X_source=X_mouse, y_source=y_mouse)
    model.predict(X_human_new)
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional as F

from ephys2tx.errors import InputError
from ephys2tx.schemas import HUMAN_IPFX_SCHEMA, MOUSE_VISP_SCHEMA
from ephys2tx.features.harmonise import HARMONISED_FEATURES, convert_mouse
from ephys2tx.models.nn.heads import arcface_loss
from ephys2tx.models.nn.losses import class_conditional_mmd
from ephys2tx.models.nn.networks import TwoSpeciesNet
from ephys2tx.models.nn.training import EarlyStopping, TemperatureScaling, smote_step, train_epochs
from ephys2tx.models.standardise import fit_standardiser, standardise

# (arcface_loss and class_conditional_mmd are re-exported: they are part of this module's API)
__all__ = ["DESIGNS", "MOUSE_FAMILY_TO_SHARED", "MouseHumanTransferClassifier", "MousePriorClassifier",
           "TwoSpeciesNet", "arcface_loss", "class_conditional_mmd", "species_inputs",
           "transfer_models"]

#: Which shared (human) family token each mouse VISp family feeds in design (b).
MOUSE_FAMILY_TO_SHARED: dict[str, str] = {
    "ramp_ap": "ramp_ap",
    "short_square_ap": "short_square_ap",
    "rheobase_ap_voltages": "rheobase_ap_shape",
    "ap_waveform": "rheobase_ap_shape",
    "ap_kinetics_ahp": "rheobase_ap_shape",
    "rheobase_current": "rheobase_firing",
    "first_spike_latency": "rheobase_firing",
    "firing_adaptation": "hero_firing_pattern",
    "passive_membrane": "passive_membrane",
    "hyperpolarising_sag": "hyperpolarising_sag",
    "rebound": "hyperpolarising_sag",
    "fi_curve": "fi_and_adaptation",
}

DESIGNS = ("harmonised", "adapters")


def species_inputs(design: str) -> tuple[list[str], dict[str, list[str]], list[str], dict[str, list[str]]]:
    """Columns and shared-token families of (human, mouse) for a design.

    Returns
    -------
    human_columns, human_token_columns, mouse_columns, mouse_token_columns
        ``*_token_columns`` maps each shared token (human family name, in
        token order) to that species' columns (possibly empty).
    """
    if design == "harmonised":
        fams = HUMAN_IPFX_SCHEMA.restricted_to(HARMONISED_FEATURES)
        cols = [c for f in fams.values() for c in f]
        return cols, fams, cols, fams
    human = HUMAN_IPFX_SCHEMA.as_dict()
    mouse_tokens: dict[str, list[str]] = {fam: [] for fam in human}
    for mouse_fam, cols in MOUSE_VISP_SCHEMA.families:
        mouse_tokens[MOUSE_FAMILY_TO_SHARED[mouse_fam]].extend(cols)
    return HUMAN_IPFX_SCHEMA.columns, human, MOUSE_VISP_SCHEMA.columns, mouse_tokens


def _named_columns(X, columns: list[str], what: str) -> np.ndarray:
    """``X[columns]`` as a float array; ``X`` must be a DataFrame that has them all."""
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame with named feature columns.")
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise InputError(f"{what} lacks column {missing[0]!r} ({len(missing)} missing).")
    return X[columns].to_numpy(dtype=np.float64)


class MouseHumanTransferClassifier(ClassifierMixin, BaseEstimator):
    """Predict human subclasses with an encoder trained jointly on mouse and human cells.

    Parameters
    ----------
    design : {"harmonised", "adapters"}
        See the module docstring.
    alignment : {None, "mmd"}
        Class-conditional MMD between species embeddings during joint training.
    source_weight : float
        Weight of the mouse loss in the joint phase.
    alignment_weight : float
        Weight of the MMD term.
    finetune : bool
        Fine-tune on human cells only after the joint phase.
    finetune_lr_factor : float
        Learning-rate multiplier of the fine-tuning phase.
    token_dim, hidden_size, embedding_dim, dropout : model sizes.
    arcface_margin, arcface_scale : ArcFace head.
    smote : bool
        SMOTE on the human inner-train rows.
    max_epochs, patience, batch_size, learning_rate, weight_decay : training.
    validation_fraction : float
        Human training rows held out for early stopping and calibration.
    random_state : int, RandomState or None

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ : as usual (human input)
    human_columns_, mouse_columns_ : list of str
    inner_train_indices_, inner_validation_indices_ : ndarray
        Positions of the human rows used for training and for early stopping
        and calibration; imputation and scaling are fitted on the former only.
    temperature_ : float
    module_ : TwoSpeciesNet
    history_ : dict
    """

    def __init__(self, design="adapters", alignment=None, *, source_weight=0.5,
                 alignment_weight=1.0, finetune=True, finetune_lr_factor=0.3, token_dim=16,
                 hidden_size=32, embedding_dim=32, dropout=0.1, arcface_margin=0.2,
                 arcface_scale=16.0, smote=True, max_epochs=40, patience=8, batch_size=128,
                 learning_rate=3e-3, weight_decay=1e-4, validation_fraction=0.15,
                 random_state=None):
        self.design = design
        self.alignment = alignment
        self.source_weight = source_weight
        self.alignment_weight = alignment_weight
        self.finetune = finetune
        self.finetune_lr_factor = finetune_lr_factor
        self.token_dim = token_dim
        self.hidden_size = hidden_size
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.arcface_margin = arcface_margin
        self.arcface_scale = arcface_scale
        self.smote = smote
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    # ------------------------------------------------------------------ inputs
    def _human_matrix(self, X) -> np.ndarray:
        if self.design == "harmonised" and isinstance(X, pd.DataFrame) and \
                not set(self.human_columns_) <= set(X.columns):
            raise InputError("the human table lacks harmonised features; pass IPFX-named columns.")
        return _named_columns(X, self.human_columns_, "X (human cells)")

    def _mouse_matrix(self, X_source) -> np.ndarray:
        if self.design == "harmonised":
            X_source = convert_mouse(X_source)
        return _named_columns(X_source, self.mouse_columns_, "X_source (mouse cells)")

    def _build_module(self, n_classes: int) -> TwoSpeciesNet:
        """The untrained network for the fitted ``human_columns_`` and ``mouse_columns_``."""
        _, human_tokens, _, mouse_tokens = species_inputs(self.design)
        hpos = {c: i for i, c in enumerate(self.human_columns_)}
        mpos = {c: i for i, c in enumerate(self.mouse_columns_)}
        return TwoSpeciesNet([[hpos[c] for c in cols] for cols in human_tokens.values()],
                             [[mpos[c] for c in mouse_tokens[f]] for f in human_tokens],
                             n_classes, shared_tokenizer=self.design == "harmonised",
                             token_dim=int(self.token_dim), hidden_size=int(self.hidden_size),
                             embedding_dim=int(self.embedding_dim), dropout=float(self.dropout),
                             scale=float(self.arcface_scale), margin=float(self.arcface_margin))

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, *, X_source=None, y_source=None):
        """Joint mouse + human training, then human fine-tuning.

        Parameters
        ----------
        X : DataFrame
            Human cells (IPFX column names).
        y : array-like
            Human subclasses.
        X_source : DataFrame
            Mouse cells (VISp column names); always training data.
        y_source : array-like
            Mouse subclasses (same class names).
        """
        if self.design not in DESIGNS:
            raise InputError(f"design must be one of {DESIGNS}, got {self.design!r}.")
        if self.alignment not in (None, "mmd"):
            raise InputError(f"alignment must be None or 'mmd', got {self.alignment!r}.")
        if X_source is None or y_source is None:
            raise InputError("the transfer model needs mouse cells: fit(X, y, X_source=..., y_source=...).")
        human_cols, human_tokens, mouse_cols, _ = species_inputs(self.design)
        self.human_columns_, self.mouse_columns_ = list(human_cols), list(mouse_cols)
        self.families_ = OrderedDict((f, list(c)) for f, c in human_tokens.items())
        Xh = self._human_matrix(X)
        Xm = self._mouse_matrix(X_source)
        y = np.asarray(y)
        y_source = np.asarray(y_source)
        if len(Xh) != len(y) or len(Xm) != len(y_source):
            raise InputError("X and y (or X_source and y_source) have different numbers of rows.")
        self.feature_names_in_ = np.asarray(self.human_columns_, dtype=object)
        self.n_features_in_ = len(self.human_columns_)
        self.classes_, yh = np.unique(y, return_inverse=True)
        lookup = {c: i for i, c in enumerate(self.classes_)}
        keep_m = np.array([v in lookup for v in y_source])
        Xm, ym = Xm[keep_m], np.array([lookup[v] for v in y_source[keep_m]], dtype=int)

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        idx = np.arange(len(yh))
        tr, va = train_test_split(idx, test_size=self.validation_fraction, stratify=yh,
                                  random_state=rng.randint(np.iinfo(np.int32).max))
        self.inner_train_indices_, self.inner_validation_indices_ = tr, va
        self.human_scaling_ = fit_standardiser(Xh[tr])
        self.mouse_scaling_ = fit_standardiser(Xm)
        Zh = standardise(Xh, self.human_scaling_)
        Zm = standardise(Xm, self.mouse_scaling_)
        Xh_tr, yh_tr = Zh[tr], yh[tr]
        if self.smote:
            Xh_tr, yh_tr = smote_step(Xh_tr, yh_tr, k_neighbors=5, random_state=seed,
                                      n_classes=len(self.classes_))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build_module(len(self.classes_))
            gen = torch.Generator().manual_seed(seed)
            data = dict(xh=torch.as_tensor(np.asarray(Xh_tr, np.float32)),
                        yh=torch.as_tensor(np.asarray(yh_tr), dtype=torch.long),
                        xm=torch.as_tensor(Zm), ym=torch.as_tensor(ym, dtype=torch.long),
                        xv=torch.as_tensor(Zh[va]), yv=yh[va])
            joint = self._train(net, data, gen, joint=True, lr=float(self.learning_rate))
            tuned = None
            if self.finetune and float(self.source_weight) > 0:
                tuned = self._train(net, data, gen, joint=False,
                                    lr=float(self.learning_rate) * float(self.finetune_lr_factor))
        self.history_ = {"joint": joint, "finetune": tuned}
        self.module_ = net.double().eval()
        self.temperature_ = TemperatureScaling().fit(self._logits(Zh[va]), yh[va]).temperature_
        return self

    def _train(self, net: TwoSpeciesNet, d: dict, gen: torch.Generator, *, joint: bool, lr: float) -> dict:
        """One phase of :func:`~ephys2tx.models.nn.training.train_epochs`, early-stopped on human macro-F1.

        Joint phase: human ArcFace loss + ``source_weight`` x mouse ArcFace loss on a random
        mouse batch [+ ``alignment_weight`` x class-conditional MMD]; fine-tuning: human only.
        """
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=float(self.weight_decay))
        n_classes = len(self.classes_)
        bs = int(self.batch_size)
        human_loss, mouse_loss = net.heads["human"].loss_function(), net.heads["mouse"].loss_function()
        with_mouse = joint and float(self.source_weight) > 0

        def batch_loss(b):
            emb_h, _ = net.embed(d["xh"][b], "human")
            loss = human_loss(emb_h, d["yh"][b])
            if with_mouse:
                mb = torch.randint(0, len(d["ym"]), (bs,), generator=gen)
                emb_m, _ = net.embed(d["xm"][mb], "mouse")
                loss = loss + float(self.source_weight) * mouse_loss(emb_m, d["ym"][mb])
                if self.alignment == "mmd":
                    loss = loss + float(self.alignment_weight) * class_conditional_mmd(
                        emb_h, d["yh"][b], emb_m, d["ym"][mb], n_classes)
            return loss

        def validation_macro_f1():
            emb_v, _ = net.embed(d["xv"], "human")
            pred = net.logits(emb_v, "human").argmax(1).numpy()
            return f1_score(d["yv"], pred, average="macro", labels=range(n_classes), zero_division=0)

        stopper = EarlyStopping(self.patience)
        history = train_epochs(net, opt, batch_loss, n_rows=len(d["yh"]), batch_size=bs,
                               max_epochs=int(self.max_epochs), generator=gen,
                               validation=validation_macro_f1, callbacks=[stopper])
        return {"validation_macro_f1": history["validation"], "best": stopper.best_score}

    # ------------------------------------------------------------------ predict
    def _logits(self, Z: np.ndarray, species: str = "human") -> np.ndarray:
        with torch.no_grad():
            emb, _ = self.module_.embed(torch.as_tensor(Z, dtype=torch.float64), species)
            return self.module_.logits(emb, species).numpy()

    def _human_z(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        return standardise(self._human_matrix(X), self.human_scaling_)

    def predict_proba(self, X) -> np.ndarray:
        """Calibrated probabilities of the human head."""
        return TemperatureScaling.probabilities(self._logits(self._human_z(X)), self.temperature_)

    def predict(self, X) -> np.ndarray:
        """Most probable human subclass."""
        return self.classes_[np.argmax(self._logits(self._human_z(X)), axis=1)]

    def embed(self, X, species: str = "human") -> np.ndarray:
        """Shared-space embeddings (L2-normalised) of human cells, or of mouse cells (VISp names)."""
        check_is_fitted(self, "module_")
        if species == "human":
            Z = self._human_z(X)
        else:
            Z = standardise(self._mouse_matrix(X), self.mouse_scaling_)
        with torch.no_grad():
            emb, _ = self.module_.embed(torch.as_tensor(Z, dtype=torch.float64), species)
        return F.normalize(emb, dim=1).numpy()

    def explain(self, X) -> pd.DataFrame:
        """Attention of the shared encoder over the family tokens, for human cells."""
        with torch.no_grad():
            _, att = self.module_.embed(torch.as_tensor(self._human_z(X), dtype=torch.float64), "human")
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(att.numpy(), columns=list(self.families_), index=index)




# --------------------------------------------------------------------------- design (d)


def _coral_map(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine map ``x -> (x - mu_s) A + mu_t`` that gives ``source`` the mean and covariance of ``target``.

    ``A = C_s^{-1/2} C_t^{1/2}`` with Ledoit-Wolf shrunk covariances (CORAL,
    Sun et al. 2016), so it stays well conditioned for a few hundred cells.
    """
    from scipy.linalg import sqrtm
    from sklearn.covariance import LedoitWolf

    cs = LedoitWolf().fit(source).covariance_
    ct = LedoitWolf().fit(target).covariance_
    a = np.real(np.linalg.solve(sqrtm(cs), sqrtm(ct)))
    return source.mean(axis=0), a, target.mean(axis=0)


class MousePriorClassifier(ClassifierMixin, BaseEstimator):
    """Design (d): a human classifier that also reads a mouse model's view of each cell.

    A classifier trained on mouse cells only (on the bridge-verified harmonised
    features) looks at every human cell after the human cells' harmonised
    features are aligned to the mouse distribution; its log-probabilities of
    the four subclasses are appended to the human features, and a human
    classifier is trained on the lot. The human model decides, per class and
    per region of feature space, how far to trust the mouse view, so a species
    shift that makes the mouse model wrong in places costs little, while what
    mouse cells teach about rare human classes (Lamp5, Vip) is kept.

    Everything is fitted in ``fit`` on the rows it receives: the mouse model on
    mouse cells only, the human-side imputer and alignment on the human
    training rows only (never on test cells), the human classifier on those
    rows.

    Parameters
    ----------
    base : {"hgb", "rf"}
        Human classifier: class-balanced gradient-boosted trees
        (:func:`~ephys2tx.models.baselines.make_hgb`) or random forest.
    alignment : {"zscore", "quantile", "coral"}
        How human harmonised features are brought into the mouse model's
        space: per-feature standardisation of each species on its own cells;
        per-feature quantile matching to a normal distribution in each
        species; or CORAL (mean and covariance of the human cells mapped onto
        the mouse cells').
    source_model : {"logreg", "rf"}
        The mouse classifier (class-balanced).
    max_iter : int or None
        Boosting iterations of the ``hgb`` human classifier (None: the
        defaults of :func:`~ephys2tx.models.baselines.make_hgb`); the study
        chooses it per outer fold, as for the human-only ``hgb``.
    random_state : int, RandomState or None

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_
    source_model_ : fitted mouse classifier
    base_model_ : fitted human classifier
    prior_columns_ : list of str
        Names of the appended mouse-view columns.
    """

    def __init__(self, base="hgb", alignment="zscore", source_model="logreg", max_iter=None,
                 random_state=None):
        self.base = base
        self.alignment = alignment
        self.source_model = source_model
        self.max_iter = max_iter
        self.random_state = random_state

    def _standardiser(self, Z: np.ndarray):
        from sklearn.preprocessing import QuantileTransformer

        if self.alignment == "quantile":
            return QuantileTransformer(n_quantiles=min(200, len(Z)), output_distribution="normal",
                                       random_state=0).fit(Z)
        return StandardScaler().fit(Z)

    def fit(self, X, y, *, X_source=None, y_source=None):
        """Fit the mouse model on ``(X_source, y_source)``, then the human model on ``(X, y)``.

        Parameters
        ----------
        X : DataFrame
            Human cells (IPFX names; must hold the harmonised features).
        y : array-like
            Human subclasses.
        X_source : DataFrame
            Mouse cells (VISp names); always training data.
        y_source : array-like
            Mouse subclasses.
        """
        from sklearn.linear_model import LogisticRegression

        from ephys2tx.models.baselines import make_hgb, make_rf

        if self.base not in ("hgb", "rf"):
            raise InputError(f"base must be 'hgb' or 'rf', got {self.base!r}.")
        if self.alignment not in ("zscore", "quantile", "coral"):
            raise InputError(f"alignment must be zscore, quantile or coral, got {self.alignment!r}.")
        if self.source_model not in ("logreg", "rf"):
            raise InputError(f"source_model must be 'logreg' or 'rf', got {self.source_model!r}.")
        if X_source is None or y_source is None:
            raise InputError("the transfer model needs mouse cells: fit(X, y, X_source=..., y_source=...).")
        shared = list(HARMONISED_FEATURES)
        Xh_shared = _named_columns(X, shared, "X (human cells)")
        Xm = _named_columns(convert_mouse(X_source), shared, "X_source (mouse cells)")
        y, y_source = np.asarray(y), np.asarray(y_source)
        if len(X) != len(y) or len(Xm) != len(y_source):
            raise InputError("X and y (or X_source and y_source) have different numbers of rows.")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))

        # Mouse side: its own imputation and standardisation, then the mouse classifier.
        self.source_imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(Xm)
        Zm = self.source_imputer_.transform(Xm)
        self.source_standardiser_ = self._standardiser(Zm)
        Sm = self.source_standardiser_.transform(Zm)
        if self.source_model == "logreg":
            mouse_model = LogisticRegression(class_weight="balanced", max_iter=5000)
        else:
            mouse_model = RandomForestClassifier(n_estimators=300, min_samples_leaf=3,
                                                 class_weight="balanced_subsample", n_jobs=1,
                                                 random_state=seed)
        self.source_model_ = mouse_model.fit(Sm, y_source)

        # Human side: alignment fitted on the human training rows only.
        self.target_imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(Xh_shared)
        Zh = self.target_imputer_.transform(Xh_shared)
        if self.alignment == "coral":
            self.coral_ = _coral_map(Zh, Zm)
        else:
            self.target_standardiser_ = self._standardiser(Zh)
        self.prior_columns_ = [f"mouse_view_{c}" for c in self.source_model_.classes_]
        if self.base == "hgb":
            base = make_hgb(random_state=seed,
                            **({} if self.max_iter is None else {"max_iter": int(self.max_iter)}))
        else:
            base = make_rf(random_state=seed)
        self.base_model_ = base.fit(self._augment(X), y)
        self.classes_ = self.base_model_.classes_
        return self

    def mouse_view(self, X) -> pd.DataFrame:
        """Log-probabilities of the mouse model for human cells ``X`` (one column per class)."""
        check_is_fitted(self, "source_model_")
        Zh = self.target_imputer_.transform(
            _named_columns(X, list(HARMONISED_FEATURES), "X (human cells)"))
        if self.alignment == "coral":
            mu_h, a, mu_m = self.coral_
            Sm = self.source_standardiser_.transform((Zh - mu_h) @ a + mu_m)
        else:
            Sm = self.target_standardiser_.transform(Zh)
        proba = self.source_model_.predict_proba(Sm)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(np.log(proba + 1e-3), index=index, columns=self.prior_columns_)

    def _augment(self, X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InputError("X (human cells) must be a pandas DataFrame with named feature columns.")
        frame = X[list(self.feature_names_in_)]
        return pd.concat([frame, self.mouse_view(frame)], axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the human model."""
        check_is_fitted(self, "base_model_")
        return self.base_model_.predict_proba(self._augment(X))

    def predict(self, X) -> np.ndarray:
        """Most probable human subclass."""
        check_is_fitted(self, "base_model_")
        return self.base_model_.predict(self._augment(X))


def transfer_models(random_state=None) -> dict[str, BaseEstimator]:
    """The four transfer designs and the human-only twins of the neural ones.

    The twin of design (d) is the human-only gradient-boosted trees (``hgb``),
    a baseline of the study.
    """
    def make(**kw):
        return MouseHumanTransferClassifier(random_state=random_state, **kw)

    # The neural designs' loss weights are the values fixed before any search on human cells
    # (mouse-loss weight 0.5, MMD weight 1.0): a search over the study's outer training folds
    # (scripts/tune_transfer.py, round 3) saw every scored cell, so it no longer sets them.
    # Design (d)'s alignment is chosen per outer fold by the study (registry.nested_choice).
    return {
        "transfer_a": make(design="harmonised"),
        "transfer_b": make(design="adapters"),
        "transfer_c": make(design="adapters", alignment="mmd"),
        "transfer_d": MousePriorClassifier(random_state=random_state),
        "transfer_a_human": make(design="harmonised", source_weight=0.0),
        "transfer_b_human": make(design="adapters", source_weight=0.0),
    }

"""Attention BiLSTM over feature families, and a flat MLP ablation: the scikit-learn estimators.

Each feature family (e.g. "action potential shape", "passive properties") is
projected by its own linear layer into a token; the tokens, in the family
order, run through a one-layer bidirectional LSTM; additive attention pools
them into one vector, which a small projection turns into an embedding. The
head is either ArcFace (additive angular margin on L2-normalised embeddings,
:class:`pytorch_metric_learning.losses.ArcFaceLoss`) or a plain softmax
layer. Probabilities are calibrated by temperature scaling on an inner
validation split, which also drives early stopping. SMOTE oversamples the
inner-train rows only, never the validation rows.

The network, training loop and steps are those of :mod:`ephys2tx.models.nn`;
this module holds the estimators (parameters, validation, preprocessing,
inner split, prediction). All preprocessing (median imputation,
standardisation) is fitted inside ``fit`` on the training rows, so the
estimators are safe inside any cross-validation loop.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.errors import InputError
from ephys2tx.models.nn.lazy import functional as F
from ephys2tx.models.nn.lazy import networks as _networks
from ephys2tx.models.nn.lazy import reexports, torch
from ephys2tx.models.nn.lazy import training as _training
from ephys2tx.models.standardise import check_feature_values, fit_standardiser, standardise
from ephys2tx.schemas import resolve_families as resolve_family_map

__all__ = [
    "EarlyStopping",
    "AttentionBiLSTMClassifier",
    "FamilyTokenBiLSTM",
    "FlatMLP",
    "FlatMLPClassifier",
    "bilstm_ablation_models",
    "resolve_families",
]

# torch and the networks are imported when a network is built, trained or read; the names
# re-exported from ephys2tx.models.nn at their first use
__getattr__ = reexports(__name__, {"FamilyTokenBiLSTM": _networks, "FlatMLP": _networks,
                                   "EarlyStopping": _training})

#: Number of families when ``families=None`` (consecutive equal column chunks).
DEFAULT_N_FAMILIES = 12
#: Rows per forward pass at prediction: small enough for the LSTM's gate tensors to stay in
#: cache (measured: 1,024 rows run the LSTM ~1.6x faster per cell than 8,192 on one core).
_PREDICT_BATCH = 1024


# --------------------------------------------------------------------------- families


def resolve_families(families, n_features: int, feature_names=None) -> OrderedDict:
    """:func:`ephys2tx.schemas.resolve_families` with ``default="chunks"`` (the family models' default).

    None splits the columns into up to 12 consecutive, near-equal chunks (``f00``, ``f01``, ...).
    """
    return OrderedDict(resolve_family_map(families, n_features, feature_names, default="chunks"))

# --------------------------------------------------------------------------- estimators


class _TorchClassifierBase(ClassifierMixin, BaseEstimator):
    """Preprocessing, inner split, SMOTE, training loop and calibration shared by both models."""

    # Subclasses list the params that define the torch module (persistence uses it).
    def _build_module(self, n_classes: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- sklearn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

    def _check_params(self) -> None:
        if self.head not in ("arcface", "softmax"):
            raise InputError(f"head must be 'arcface' or 'softmax', got {self.head!r}.")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise InputError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}.")
        if int(self.max_epochs) < 1 or int(self.batch_size) < 1:
            raise InputError("max_epochs and batch_size must be positive integers.")

    def _device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device='cuda' was asked but no CUDA device is available; use device='cpu'.")
        return torch.device(self.device)

    # ---- preprocessing (arrays, so persistence needs no pickled sklearn objects)
    def _preprocess(self, X: np.ndarray) -> np.ndarray:
        return standardise(X, (self.impute_values_, self.scale_mean_, self.scale_scale_))

    def _inner_split(self, y_enc: np.ndarray, rng: np.random.RandomState):
        """Stratified inner train/validation indices (validation may be empty on tiny data)."""
        n = len(y_enc)
        counts = np.bincount(y_enc)
        n_val = int(math.ceil(self.validation_fraction * n))
        n_classes = len(counts)
        idx = np.arange(n)
        if n_val < n_classes or n - n_val < n_classes or counts.min() < 2:
            if n < 10:
                return idx, idx[:0]
            tr, va = train_test_split(idx, test_size=n_val, random_state=rng)
            return np.sort(tr), np.sort(va)
        tr, va = train_test_split(idx, test_size=n_val, stratify=y_enc, random_state=rng)
        return np.sort(tr), np.sort(va)

    def _resample(self, X: np.ndarray, y: np.ndarray, rng: np.random.RandomState):
        """SMOTE on inner-train rows; skipped when a class is too small to interpolate."""
        if not self.smote:
            return X, y
        # (the last draw from rng in fit, so drawing it when SMOTE is then skipped changes nothing)
        return _training.smote_step(X, y, k_neighbors=int(self.smote_k_neighbors),
                                    random_state=rng.randint(np.iinfo(np.int32).max),
                                    n_classes=len(self.classes_))

    # ---- fit
    def fit(self, X, y):
        """Fit preprocessing, network and temperature on ``(X, y)``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_cells, n_features)
            Features; NaN marks a missing value.
        y : array-like of shape (n_cells,)
            Class labels.

        Returns
        -------
        self
        """
        self._check_params()
        check_feature_values(X)
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64,
                             ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"need samples of at least 2 classes to fit, got 1 class: {self.classes_[0]!r}.")
        names = getattr(self, "feature_names_in_", None)

        self.families_ = resolve_family_map(self.families, X.shape[1], names, default="chunks")

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        train_idx, val_idx = self._inner_split(y_enc, rng)
        self.inner_train_indices_, self.inner_validation_indices_ = train_idx, val_idx

        # Preprocessing fitted on the inner-train rows only.
        self.impute_values_, self.scale_mean_, self.scale_scale_ = fit_standardiser(X[train_idx], names)
        Z = self._preprocess(X)

        X_tr, y_tr = self._resample(Z[train_idx], y_enc[train_idx], rng)
        X_va, y_va = Z[val_idx], y_enc[val_idx]

        device = self._device()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build_module(len(self.classes_)).to(device)
            self.history_ = self._train(module, X_tr, y_tr, X_va, y_va, seed, device)
        self.module_ = module.eval()
        if len(val_idx) >= 2:
            scaler = _training.TemperatureScaling().fit(self._logits(Z[val_idx]), y_va)
            self.temperature_ = scaler.temperature_
        else:
            self.temperature_ = 1.0
        return self

    def _train(self, module, X_tr, y_tr, X_va, y_va, seed, device) -> dict:
        """Run :func:`~ephys2tx.models.nn.training.train_epochs` with early stopping on validation loss."""
        loss_fn = module.head.loss_function()  # (ArcFace: built before the first draw of dropout)
        optimizer = torch.optim.AdamW(module.parameters(), lr=float(self.learning_rate),
                                      weight_decay=float(self.weight_decay))
        xt = torch.as_tensor(X_tr, device=device)
        yt = torch.as_tensor(y_tr, dtype=torch.long, device=device)
        xv = torch.as_tensor(X_va, device=device)
        yv = torch.as_tensor(y_va, dtype=torch.long, device=device)

        def batch_loss(batch):
            return loss_fn(module.embed(xt[batch])[0], yt[batch])

        def validation_loss():
            return F.cross_entropy(module(xv)[0], yv)

        stopper = _training.EarlyStopping(self.patience, lower_is_better=True)
        history = _training.train_epochs(module, optimizer, batch_loss, n_rows=len(yt),
                                         batch_size=int(self.batch_size), max_epochs=int(self.max_epochs),
                                         generator=torch.Generator().manual_seed(seed),
                                         validation=validation_loss if len(y_va) > 0 else None,
                                         callbacks=[stopper], device=device, verbose=self.verbose)
        best_epoch = stopper.best_epoch if stopper.restored else len(history["train_loss"]) - 1
        return {"train_loss": history["train_loss"], "validation_loss": history["validation"],
                "best_epoch": best_epoch}

    # ---- predict
    def _forward_batches(self, Z: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        device = next(self.module_.parameters()).device
        outs, atts = [], []
        self.module_.eval()
        with torch.inference_mode():
            for start in range(0, len(Z), _PREDICT_BATCH):
                xb = torch.as_tensor(Z[start:start + _PREDICT_BATCH], device=device)
                if what == "logits":
                    out, att = self.module_(xb)
                else:
                    out, att = self.module_.embed(xb)
                    if self.head == "arcface":
                        out = F.normalize(out, dim=1)
                outs.append(out.cpu().numpy())
                if att is not None:
                    atts.append(att.cpu().numpy())
        n_out = self.module_.head.weight.shape[1] if what == "logits" and self.head == "arcface" else None
        if not outs:
            width = n_out if n_out is not None else 0
            return np.empty((0, width), np.float32), None
        return np.concatenate(outs), (np.concatenate(atts) if atts else None)

    def _logits(self, Z: np.ndarray) -> np.ndarray:
        return self._forward_batches(Z, "logits")[0].astype(np.float64)

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        check_feature_values(X, getattr(self, "feature_names_in_", None))
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        return self._preprocess(X)

    def decision_function(self, X) -> np.ndarray:
        """Uncalibrated logits, shape (n_cells, n_classes); (n_cells,) for two classes.

        With two classes it is the logit difference ``classes_[1] - classes_[0]``
        (scikit-learn's convention for binary decision functions).
        """
        logits = self._logits(self._validated(X))
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        """Temperature-calibrated class probabilities, columns in ``classes_`` order."""
        return _training.TemperatureScaling.probabilities(self._logits(self._validated(X)), self.temperature_)

    def predict(self, X) -> np.ndarray:
        """Most probable class per cell."""
        logits = self._logits(self._validated(X))
        return self.classes_[np.argmax(logits, axis=1)]

    def embed(self, X) -> np.ndarray:
        """Embeddings (n_cells, embedding_dim); L2-normalised with the ArcFace head."""
        return self._forward_batches(self._validated(X), "embedding")[0].astype(np.float32)

    # ---- persistence (ephys2tx.models.persistence: JSON fields + safetensors, no pickle)
    def _export_state(self) -> tuple[dict, dict]:
        """``(JSON fields, tensors)`` of the fitted model, for :func:`~ephys2tx.models.persistence.save_model`."""
        from ephys2tx.models.persistence import estimator_fields, preprocessing_fields, state_tensors

        fields = estimator_fields(self)
        fields.update(families={k: [int(i) for i in v] for k, v in self.families_.items()},
                      preprocessing=preprocessing_fields(self.impute_values_, self.scale_mean_,
                                                         self.scale_scale_))
        return fields, state_tensors(self.module_)

    @classmethod
    def _from_state(cls, fields: dict, tensors: dict, *, source="the weights file"):
        """The fitted model that :meth:`_export_state` described."""
        from ephys2tx.models.persistence import load_state, preprocessing_arrays, restore_estimator_fields

        est = restore_estimator_fields(cls, fields)
        est.families_ = OrderedDict((k, [int(i) for i in v]) for k, v in fields["families"].items())
        est.impute_values_, est.scale_mean_, est.scale_scale_ = preprocessing_arrays(fields["preprocessing"])
        module = load_state(est._build_module(len(est.classes_)), tensors, str(source))
        est.module_ = module.to(est._device()).eval()
        return est


class AttentionBiLSTMClassifier(_TorchClassifierBase):
    """Attention BiLSTM over feature-family tokens, trained with ArcFace (or softmax).

    Parameters
    ----------
    families : None or Mapping, default=None
        Family name -> list of column names or int indices, in token order.
        None splits the columns into up to 12 consecutive chunks.
    token_dim : int, default=16
        Width of each family token.
    hidden_size : int, default=32
        LSTM hidden size per direction.
    embedding_dim : int, default=32
        Embedding width.
    dropout : float, default=0.3
        Dropout in the embedding projection.
    pooling : {"attention", "mean"}, default="attention"
        Pooling over the family tokens.
    head : {"arcface", "softmax"}, default="arcface"
        ArcFace: additive angular margin on L2-normalised embeddings versus
        normalised class weights; prediction uses ``scale * cos(theta)``.
    arcface_margin : float, default=0.2
        Additive angular margin in radians.
    arcface_scale : float, default=8.0
        Scale of the cosine logits.
    smote : bool, default=True
        Oversample minority classes of the inner-train rows with SMOTE.
    smote_k_neighbors : int, default=5
        SMOTE neighbours (lowered to ``min class count - 1`` when needed).
    max_epochs : int, default=150
    patience : int, default=15
        Early stopping patience in epochs (validation cross-entropy).
    batch_size : int, default=128
    learning_rate : float, default=3e-3
    weight_decay : float, default=1e-4
    validation_fraction : float, default=0.15
        Share of the training rows held out (stratified) for early stopping
        and temperature scaling.
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
    verbose : bool, default=False

    Attributes
    ----------
    classes_ : ndarray
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame.
    families_ : OrderedDict
        Family name -> list of column indices.
    temperature_ : float
        Temperature of the probability calibration.
    module_ : FamilyTokenBiLSTM
    inner_train_indices_, inner_validation_indices_ : ndarray
        Rows of X used for training and for early stopping/calibration.
    history_ : dict
        Per-epoch losses and the best epoch.
    """

    def __init__(self, families=None, *, token_dim=16, hidden_size=32, embedding_dim=32,
                 dropout=0.3, pooling="attention", head="arcface", arcface_margin=0.2,
                 arcface_scale=8.0, smote=True, smote_k_neighbors=5, max_epochs=150,
                 patience=15, batch_size=128, learning_rate=3e-3, weight_decay=1e-4,
                 validation_fraction=0.15, device="cpu", random_state=None, verbose=False):
        self.families = families
        self.token_dim = token_dim
        self.hidden_size = hidden_size
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.pooling = pooling
        self.head = head
        self.arcface_margin = arcface_margin
        self.arcface_scale = arcface_scale
        self.smote = smote
        self.smote_k_neighbors = smote_k_neighbors
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        if self.pooling not in ("attention", "mean"):
            raise InputError(f"pooling must be 'attention' or 'mean', got {self.pooling!r}.")

    def _build_module(self, n_classes: int) -> FamilyTokenBiLSTM:
        return _networks.FamilyTokenBiLSTM(
            list(self.families_.values()), n_classes, token_dim=int(self.token_dim),
            hidden_size=int(self.hidden_size), embedding_dim=int(self.embedding_dim),
            dropout=float(self.dropout), pooling=self.pooling, head=self.head,
            arcface_scale=float(self.arcface_scale), arcface_margin=float(self.arcface_margin),
        )

    def explain(self, X):
        """Per-cell attention over the families.

        Returns
        -------
        pandas.DataFrame
            Shape (n_cells, n_families), columns = family names, rows sum to 1;
            the index is X's index when X is a DataFrame.
        """
        import pandas as pd

        index = X.index if isinstance(X, pd.DataFrame) else None
        _, attention = self._forward_batches(self._validated(X), "logits")
        if attention is None:
            attention = np.empty((0, len(self.families_)), np.float32)
        return pd.DataFrame(attention, columns=list(self.families_), index=index)


class FlatMLPClassifier(_TorchClassifierBase):
    """MLP on the flat feature vector with the BiLSTM's preprocessing, SMOTE and heads.

    The "MLP on flat features" ablation. Parameters as
    :class:`AttentionBiLSTMClassifier` (``hidden_size`` is the first layer
    width); it has no families, pooling or attention.
    """

    def __init__(self, *, hidden_size=64, embedding_dim=32, dropout=0.3, head="arcface",
                 arcface_margin=0.2, arcface_scale=8.0, smote=True, smote_k_neighbors=5,
                 max_epochs=150, patience=15, batch_size=128, learning_rate=3e-3,
                 weight_decay=1e-4, validation_fraction=0.15, device="cpu", random_state=None,
                 verbose=False):
        self.hidden_size = hidden_size
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.head = head
        self.arcface_margin = arcface_margin
        self.arcface_scale = arcface_scale
        self.smote = smote
        self.smote_k_neighbors = smote_k_neighbors
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @property
    def families(self):
        """The flat MLP uses all columns as one block."""
        return None

    def _build_module(self, n_classes: int) -> FlatMLP:
        return _networks.FlatMLP(self.n_features_in_, n_classes, hidden_size=int(self.hidden_size),
                                 embedding_dim=int(self.embedding_dim), dropout=float(self.dropout),
                                 head=self.head, arcface_scale=float(self.arcface_scale),
                                 arcface_margin=float(self.arcface_margin))


def bilstm_ablation_models(families, random_state=None) -> dict[str, BaseEstimator]:
    """The BiLSTM and its ablations, with the defaults chosen on the mouse lockbox animals.

    (``scripts/tune_bilstm.py``: ArcFace scale 8 and dropout 0.3; the flat MLP
    takes the same head and dropout. The study's mouse scores exclude the
    lockbox animals; see ``docs/bilstm.md``.)

    Returns
    -------
    dict
        ``bilstm`` (attention + SMOTE + ArcFace), ``bilstm_nosmote``,
        ``bilstm_softmax``, ``bilstm_meanpool`` and ``mlp`` (flat features).
    """
    def bilstm(**kw):
        return AttentionBiLSTMClassifier(families=families, random_state=random_state, **kw)

    return {
        "bilstm": bilstm(),
        "bilstm_nosmote": bilstm(smote=False),
        "bilstm_softmax": bilstm(head="softmax"),
        "bilstm_meanpool": bilstm(pooling="mean"),
        "mlp": FlatMLPClassifier(random_state=random_state),
    }

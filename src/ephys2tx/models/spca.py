"""Per-family sparse PCA, as in the Allen Institute drcme pipeline (Gouwens et al. 2020).

Each feature family is reduced separately with :class:`sklearn.decomposition.SparsePCA`.
Because sparse loadings are not orthogonal, the variance a component explains is the
*adjusted* variance of Zou, Hastie & Tibshirani (2006): the squared diagonal of R in
the QR decomposition of the component scores. A component is kept when its adjusted
variance is at least ``variance_threshold`` of the family's total variance; at least
one component per family is kept.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import SparsePCA
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ephys2tx.schemas import resolve_families


def adjusted_variance(scores: np.ndarray) -> np.ndarray:
    """Adjusted variance of possibly correlated component scores (Zou et al. 2006)."""
    centred = scores - scores.mean(axis=0)
    _, r = np.linalg.qr(centred)
    return np.diag(r) ** 2 / max(len(scores) - 1, 1)


class FamilySparsePCA(TransformerMixin, BaseEstimator):
    """Sparse PCA within each feature family, keeping components above a variance threshold.

    Expects imputed, standardised input (put it after an imputer and a scaler
    in a Pipeline). Families with a single feature pass through unchanged.

    Parameters
    ----------
    families : mapping or sequence or None
        ``{family: [columns]}`` (names or positions) covering every column
        exactly once; None: each column is its own family. See
        :func:`ephys2tx.schemas.resolve_families`.
    alpha : float
        Sparsity (L1) penalty of :class:`~sklearn.decomposition.SparsePCA`.
    max_components : int
        Components fitted per family (capped by the family's size).
    variance_threshold : float
        Keep a component if its adjusted variance is at least this fraction
        of the family's total variance.
    random_state : int, RandomState or None

    Attributes
    ----------
    families_ : dict
        Family name -> column positions.
    components_ : dict
        Family name -> kept loadings, shape (n_kept, n_family_features).
    explained_variance_ratio_ : dict
        Family name -> adjusted variance fraction of the kept components.
    n_features_in_, feature_names_in_ : as usual
    """

    def __init__(self, families=None, alpha: float = 1.0, max_components: int = 6,
                 variance_threshold: float = 0.01, random_state=None):
        self.families = families
        self.alpha = alpha
        self.max_components = max_components
        self.variance_threshold = variance_threshold
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit one sparse PCA per family on ``X``."""
        X = validate_data(self, X, dtype=np.float64)
        if self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {self.max_components}.")
        if not 0 <= self.variance_threshold < 1:
            raise ValueError(f"variance_threshold must be in [0, 1), got {self.variance_threshold}.")
        rng = check_random_state(self.random_state)
        names = getattr(self, "feature_names_in_", None)
        self.families_ = resolve_families(self.families, X.shape[1], names, default="columns")
        self.components_, self.means_, self.explained_variance_ratio_ = {}, {}, {}
        for fam, idx in self.families_.items():
            block = X[:, idx]
            mean = block.mean(axis=0)
            self.means_[fam] = mean
            total = float(np.var(block - mean, axis=0, ddof=1).sum()) if len(block) > 1 else 0.0
            if len(idx) == 1 or total <= 0:
                self.components_[fam] = np.eye(len(idx))[:1]
                self.explained_variance_ratio_[fam] = np.array([1.0])
                continue
            k = min(len(idx), self.max_components, max(len(block) - 1, 1))
            spca = SparsePCA(n_components=k, alpha=self.alpha, method="cd", random_state=rng.randint(2**31 - 1),
                             max_iter=200)
            spca.fit(block)
            loadings = spca.components_
            norms = np.linalg.norm(loadings, axis=1)
            loadings = loadings[norms > 0]
            if len(loadings) == 0:  # everything shrunk to zero: fall back to the first feature
                loadings = np.eye(len(idx))[:1]
            scores = (block - mean) @ loadings.T
            ratio = adjusted_variance(scores) / total
            keep = ratio >= self.variance_threshold
            if not keep.any():
                keep[np.argmax(ratio)] = True
            self.components_[fam] = loadings[keep]
            self.explained_variance_ratio_[fam] = ratio[keep]
        return self

    def transform(self, X):
        """Project each family onto its kept sparse components and concatenate."""
        check_is_fitted(self, "components_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        blocks = [(X[:, idx] - self.means_[fam]) @ self.components_[fam].T
                  for fam, idx in self.families_.items()]
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features=None):
        """``<family>__pc<k>`` for each kept component."""
        check_is_fitted(self, "components_")
        return np.array([f"{fam}__pc{k}" for fam, comp in self.components_.items()
                         for k in range(len(comp))], dtype=object)

"""The Gouwens et al. 2020 replication and simple baselines, as scikit-learn Pipelines.

Every pipeline starts with a median imputer and a standard scaler, so that
missing values and scaling are learned from the training rows of a fold only.
"""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ephys2tx.models.spca import FamilySparsePCA

#: Defaults of the class-balanced forest (Gouwens 2020 used a random forest on sPCA scores).
FOREST_DEFAULTS = {"n_estimators": 500, "class_weight": "balanced_subsample",
                   "min_samples_leaf": 1, "max_features": "sqrt"}


def _front():
    return [("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler())]


def make_spca_rf(families=None, *, alpha: float = 1.0, variance_threshold: float = 0.01,
                 n_estimators: int = 500, random_state=None, n_jobs: int | None = -1) -> Pipeline:
    """Standardise -> per-family sparse PCA -> class-balanced random forest."""
    forest = RandomForestClassifier(**{**FOREST_DEFAULTS, "n_estimators": n_estimators},
                                    random_state=random_state, n_jobs=n_jobs)
    return Pipeline(_front() + [
        ("spca", FamilySparsePCA(families=families, alpha=alpha,
                                 variance_threshold=variance_threshold,
                                 random_state=random_state)),
        ("forest", forest),
    ])


def make_rf(*, n_estimators: int = 500, random_state=None, n_jobs: int | None = -1) -> Pipeline:
    """Class-balanced random forest on the plain (imputed) features."""
    forest = RandomForestClassifier(**{**FOREST_DEFAULTS, "n_estimators": n_estimators},
                                    random_state=random_state, n_jobs=n_jobs)
    return Pipeline(_front() + [("forest", forest)])


def make_logreg(*, C: float = 1.0, random_state=None) -> Pipeline:
    """Class-balanced multinomial logistic regression on standardised features."""
    return Pipeline(_front() + [
        ("logreg", LogisticRegression(C=C, class_weight="balanced", max_iter=5000,
                                      random_state=random_state)),
    ])

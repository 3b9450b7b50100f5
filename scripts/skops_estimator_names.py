"""Record scikit-learn's ``all_estimators()`` for skops' default allow-list (fast ``predict`` start-up).

Run after upgrading scikit-learn: with another version the record is not used (skops walks
scikit-learn at import, as without it); tests/test_persistence.py compares the record with the
walk::

    .venv/bin/python scripts/skops_estimator_names.py
"""

import importlib.resources
import json

from ephys2tx.models.persistence import ESTIMATOR_NAMES_FILE, sklearn_estimator_names

if __name__ == "__main__":
    path = importlib.resources.files("ephys2tx.models") / ESTIMATOR_NAMES_FILE
    record = sklearn_estimator_names()
    pairs = ",\n".join("  " + json.dumps(pair) for pair in record["estimators"])
    with open(str(path), "w", encoding="utf-8") as handle:
        handle.write(f'{{"sklearn": {json.dumps(record["sklearn"])},\n "estimators": [\n{pairs}\n]}}\n')
    print(f"{path}: {len(record['estimators'])} estimators of scikit-learn {record['sklearn']}")

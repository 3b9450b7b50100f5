"""Cost of the nested choices: fit time of `hgb` and `transfer_d` with and without inner CV.

One outer training fold of the human table (4/5 of the cells), one OpenMP thread (as in the
study's parallel folds), best of ``--repeats``. Prints the times and the ratio nested / plain.

    .venv/bin/python benchmarks/bench_nested.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import time

from threadpoolctl import threadpool_limits

from ephys2tx.data.datasets import load_dataset
from ephys2tx.evaluation.splits import make_splits
from ephys2tx.models.registry import make_model


def best_time(make, X, y, fit_params, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        model = make()
        start = time.perf_counter()
        model.fit(X, y, **fit_params)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the --quick candidates")
    args = parser.parse_args()
    human = load_dataset("human", args.data_dir)
    mouse = load_dataset("mouse_visp", args.data_dir)
    fold = make_splits(human.labels.to_numpy(), n_splits=5, n_repeats=1, random_state=0)[0]
    X, y = human.features.iloc[fold.train], human.labels.to_numpy()[fold.train]
    source = {"X_source": mouse.features, "y_source": mouse.labels.to_numpy()}
    columns = list(human.features.columns)
    print(f"one outer training fold: {len(y)} human cells; quick={args.quick}")
    with threadpool_limits(limits=1, user_api="openmp"):
        for name, fit_params in (("hgb", {}), ("transfer_d", source)):
            plain = best_time(lambda: make_model(name, human.families, columns, quick=args.quick),
                              X, y, fit_params, args.repeats)
            nested = best_time(lambda: make_model(name, human.families, columns, quick=args.quick,
                                                  species="human"), X, y, fit_params, args.repeats)
            print(f"{name:10s} plain {plain:6.2f} s   nested {nested:6.2f} s   "
                  f"ratio {nested / plain:4.1f}x")


if __name__ == "__main__":
    main()

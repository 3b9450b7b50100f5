"""Parallel, resumable extraction of IPFX feature vectors from NWB 2 files.

Each cell is processed by :func:`ephys2tx.features.nwb.vectors.extract_cell`
in a worker (local process pool, or a Dask distributed cluster) which writes
its result -- features or failure reason -- to a per-cell cache file at once
(atomic rename).  The table is assembled from the cache at the end, so a
killed run restarted with the same arguments recomputes only the missing
cells.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import resource
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from . import cache
from .adapter import CellFailure
from .vectors import FAMILIES

META_FAMILIES = b"ephys2tx.families"
META_SUMMARY = b"ephys2tx.summary_columns"
META_SETTINGS = b"ephys2tx.settings"
SUMMARY_PREFIX = "summary__"

from ephys2tx.errors import InputError  # noqa: E402

ProgressCallback = Callable[[int, int, int], None]


def _input_error(message: str) -> Exception:
    return InputError(message)


@dataclasses.dataclass(frozen=True)
class ExtractionResult:
    """Outcome of :func:`extract_features`."""

    features_path: Path
    failures_path: Path
    n_cells: int
    n_failed: int
    n_computed: int
    n_from_cache: int
    max_worker_rss_mb: float


def find_nwb_files(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Expand files and directories (searched recursively for ``*.nwb``) into a sorted file list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.nwb")))
        elif p.exists() or p.suffix == ".nwb":
            files.append(p)  # missing files become recorded failures
        else:
            raise _input_error(f"input path {p} does not exist; pass NWB files or directories containing them")
    if not files:
        raise _input_error(f"no .nwb files found in {list(map(str, paths))}")
    stems = Counter(f.stem for f in files)
    dup = sorted(s for s, n in stems.items() if n > 1)
    if dup:
        raise _input_error(f"cell ids (file stems) must be unique; duplicated: {dup[:5]}; rename the files")
    return files


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux ``VmHWM`` (reset at exec, so a worker does not report the peak of
    the process that started it, as ``ru_maxrss`` does); ``ru_maxrss`` elsewhere.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_cell(path: str, settings: dict, cache_dir: str) -> dict:
    """Extract one cell into the cache (no-op when already cached); return a small status dict."""
    cache_path = Path(cache_dir)
    key = cache.cell_key(path, settings)
    record = cache.read(cache_path, key)
    from_cache = record is not None
    if record is None:
        record = {"cell_id": Path(path).stem, "path": str(path)}
        try:
            from .vectors import extract_cell

            out = extract_cell(path, ap_window=settings["ap_window"], compact=settings["compact"],
                               summary=settings.get("summary", True))
            record.update(status="ok", reason="", **out)
        except CellFailure as exc:
            record.update(status="failed", reason=str(exc))
        except Exception as exc:  # never let one cell stop the run
            record.update(status="failed", reason=f"unexpected {type(exc).__name__}: {exc}")
        cache.write_atomic(cache_path, key, record)
    rss_mb = peak_rss_mb()
    return {"cell_id": record["cell_id"], "status": record["status"], "from_cache": from_cache,
            "max_rss_mb": rss_mb}


def warm_up_worker(limit_blas_threads: bool = False) -> None:
    """Import ipfx and parse the stimulus ontology once in this process.

    Used as the process-pool initializer (and called in the parent before a
    fork-based pool starts, so forked workers inherit the imports instead of
    each paying ~3 s for them).  With ``limit_blas_threads`` BLAS/OpenMP pools
    are limited to one thread, so N workers do not oversubscribe N cores.
    """
    import ipfx.feature_record  # noqa: F401
    import ipfx.feature_vectors  # noqa: F401
    import ipfx.script_utils  # noqa: F401

    from .adapter import default_ontology, install_ipfx_memoization

    default_ontology()
    install_ipfx_memoization()
    if limit_blas_threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            return
        threadpool_limits(1)


def _run_local(files, settings, cache_dir, workers, on_done):
    warm_up_worker()
    if workers <= 1:
        for f in files:
            on_done(process_cell(str(f), settings, str(cache_dir)))
        return
    # Cells are handed out one at a time (each takes ~1 s, so queueing overhead
    # is negligible and the load stays balanced across workers).
    with ProcessPoolExecutor(max_workers=workers, initializer=warm_up_worker, initargs=(True,)) as pool:
        futures = [pool.submit(process_cell, str(f), settings, str(cache_dir)) for f in files]
        for fut in as_completed(futures):
            on_done(fut.result())


def _run_dask(files, settings, cache_dir, scheduler, on_done):
    from distributed import Client, as_completed as dask_as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        client.run(warm_up_worker, True)
        futures = client.map(process_cell, [str(f) for f in files], settings=settings,
                             cache_dir=str(cache_dir), pure=False)
        for fut in dask_as_completed(futures):
            on_done(fut.result())
    finally:
        if client is not scheduler:
            client.close()


def extract_features(
    paths: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    ap_window: float = 0.003,
    compact: bool = False,
    summary: bool = True,
    workers: int = 1,
    scheduler=None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> ExtractionResult:
    """Compute IPFX feature vectors and summary features for every cell and write a parquet table.

    Parameters
    ----------
    paths : path or sequence of paths
        NWB 2 files (one cell each) or directories searched recursively for ``*.nwb``.
    out : path
        Output parquet file; failures go to ``<out>.failures.csv``.
    ap_window : float
        AP waveform window after threshold, seconds (ipfx default 0.003).
    compact : bool
        Resample families to 498 values in total (see ``vectors.COMPACT_LAYOUT``).
    summary : bool
        Also compute the ``summary__*`` IPFX summary features (from the same
        spike analyses as the vectors; about 2 % of the time per cell).
    workers : int
        Local worker processes (1 = in-process).
    scheduler : str or distributed.Client, optional
        Address of an existing Dask distributed scheduler; overrides ``workers``.
        Workers must see the input files and ``cache_dir`` at the same paths.
    cache_dir : path, optional
        Per-cell cache (default ``<out>.cache``); rerunning resumes from it.
    progress : callable, optional
        Called as ``progress(done, failed, remaining)`` after each cell.

    Returns
    -------
    ExtractionResult
    """
    if ap_window <= 0 or ap_window > 0.05:
        raise _input_error(f"ap_window={ap_window} s is outside (0, 0.05]; use e.g. 0.003")
    if int(workers) < 1:
        raise _input_error(f"workers={workers} must be >= 1")
    files = find_nwb_files(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else out.with_name(out.name + ".cache")
    settings = {"ap_window": float(ap_window), "compact": bool(compact)}
    if not summary:  # only then, so caches written with summaries stay valid
        settings["summary"] = False

    state = {"done": 0, "failed": 0, "computed": 0, "cached": 0, "rss": 0.0}

    def on_done(status):
        state["done"] += 1
        state["failed"] += status["status"] != "ok"
        state["cached" if status["from_cache"] else "computed"] += 1
        state["rss"] = max(state["rss"], status["max_rss_mb"])
        if progress is not None:
            progress(state["done"], state["failed"], len(files) - state["done"])

    if scheduler is not None:
        _run_dask(files, settings, cache_dir, scheduler, on_done)
    else:
        _run_local(files, settings, cache_dir, int(workers), on_done)

    records = [cache.read(cache_dir, cache.cell_key(f, settings)) for f in files]
    missing = [str(f) for f, r in zip(files, records) if r is None]
    if missing:
        raise RuntimeError(f"cache entries missing after the run for {missing[:3]}; rerun to resume")
    table, failures = _assemble(records)
    failures_path = out.with_name(out.name + ".failures.csv")
    _write_parquet(table, out, settings)
    _write_failures(failures, failures_path)
    return ExtractionResult(out, failures_path, n_cells=len(table), n_failed=len(failures),
                            n_computed=state["computed"], n_from_cache=state["cached"],
                            max_worker_rss_mb=state["rss"])


def _assemble(records):
    ok = [r for r in records if r["status"] == "ok"]
    failures = [{"cell_id": r["cell_id"], "path": r["path"], "reason": r["reason"]}
                for r in records if r["status"] != "ok"]
    # Family lengths depend on the protocol (e.g. stimulus duration); cells that
    # differ from the majority cannot share columns and are recorded as failures.
    expected = {name: Counter(r["vectors"][name].size for r in ok).most_common(1)[0][0]
                for name in FAMILIES} if ok else {}
    rows, index = [], []
    summary_names = sorted({k for r in ok for k in r["summary"]})
    for r in ok:
        bad = [f"{n} has {r['vectors'][n].size} values, expected {expected[n]}"
               for n in FAMILIES if r["vectors"][n].size != expected[n]]
        if bad:
            failures.append({"cell_id": r["cell_id"], "path": r["path"],
                             "reason": "feature-vector length differs from other cells (different protocol?): "
                                       + "; ".join(bad)})
            continue
        rows.append(np.concatenate([r["vectors"][n] for n in FAMILIES]
                                   + [np.array([r["summary"].get(k, np.nan) for k in summary_names])]))
        index.append(r["cell_id"])
    columns = [f"{n}__{k:04d}" for n in FAMILIES for k in range(expected.get(n, 0))]
    columns += [SUMMARY_PREFIX + k for k in summary_names]
    table = pd.DataFrame(np.vstack(rows) if rows else np.empty((0, len(columns))),
                         index=pd.Index(index, name="cell_id"), columns=columns, dtype=np.float64)
    return table, failures


def _write_parquet(table: pd.DataFrame, out: Path, settings: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    families = {n: [c for c in table.columns if c.startswith(n + "__")] for n in FAMILIES}
    summary = [c for c in table.columns if c.startswith(SUMMARY_PREFIX)]
    arrow = pa.Table.from_pandas(table, preserve_index=True)
    meta = dict(arrow.schema.metadata or {})
    meta[META_FAMILIES] = json.dumps(families).encode()
    meta[META_SUMMARY] = json.dumps(summary).encode()
    meta[META_SETTINGS] = json.dumps(settings).encode()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(arrow.replace_schema_metadata(meta), tmp)
    os.replace(tmp, out)


def _write_failures(failures: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["cell_id", "path", "reason"])
        writer.writeheader()
        writer.writerows(sorted(failures, key=lambda r: r["cell_id"]))
    os.replace(tmp, path)


def load_feature_table(path: str | Path, include_summary: bool = False) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Read a table written by :func:`extract_features`.

    Parameters
    ----------
    path : path
        Parquet file.
    include_summary : bool
        Also return the ``summary__*`` IPFX summary columns (not part of any family).

    Returns
    -------
    features : DataFrame
        Index cell id, float columns.
    families : dict
        Ordered family name -> column names (the 12 families).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise _input_error(f"feature table {path} not found; create it with `ephys2tx extract`")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if META_FAMILIES not in meta:
        raise _input_error(f"{path} has no '{META_FAMILIES.decode()}' schema metadata; "
                           "it was not written by `ephys2tx extract`")
    families = json.loads(meta[META_FAMILIES])
    frame = table.to_pandas()
    frame.index = frame.index.astype(str)
    columns = [c for cols in families.values() for c in cols]
    if include_summary:
        columns += json.loads(meta.get(META_SUMMARY, b"[]"))
    return frame[columns].astype(np.float64), families


def as_dataset(path: str | Path, labels: pd.Series | None = None, name: str | None = None,
               species: str = "unknown"):
    """Wrap an extracted table as ``ephys2tx.data.datasets.PatchSeqDataset``.

    ``labels`` (index = cell id) restricts the cells to the labelled ones.
    """
    from ephys2tx.data.datasets import PatchSeqDataset

    features, families = load_feature_table(path)
    if labels is not None:
        labels = labels.astype(str)
        labels.index = labels.index.astype(str)
        common = features.index.intersection(labels.index)
        if len(common) == 0:
            raise _input_error(f"no cell id of {path} appears in the labels index; ids are the NWB file stems")
        features, labels = features.loc[common], labels.loc[common]
    else:
        labels = pd.Series(pd.NA, index=features.index, dtype=object)
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return PatchSeqDataset(
        name=name or Path(path).stem, species=species, features=features, labels=labels, groups=None,
        metadata=pd.DataFrame(index=features.index), families=families, qc_report=[],
        checksums={str(path): digest},
    )

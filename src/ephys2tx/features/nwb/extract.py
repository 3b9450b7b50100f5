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
import io
import json
import os
import resource
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ephys2tx.atomic import replace_atomically
from ephys2tx.errors import InputError

from . import cache
from .adapter import CellFailure
from .vectors import FAMILIES

META_FAMILIES = b"ephys2tx.families"
META_SUMMARY = b"ephys2tx.summary_columns"
META_SETTINGS = b"ephys2tx.settings"
SUMMARY_PREFIX = "summary__"
#: How long ``--scheduler`` waits for the Dask scheduler to answer.
SCHEDULER_TIMEOUT = "30s"

ProgressCallback = Callable[[int, int, int], None]


@dataclasses.dataclass(frozen=True)
class ExtractionResult:
    """Outcome of :func:`extract_features`.

    Attributes
    ----------
    features_path, failures_path : Path
        The parquet feature table and the failures CSV (``cell_id,path,reason``).
    n_cells, n_failed : int
        Rows of each.
    n_computed, n_from_cache : int
        Cells extracted by this run and cells taken from the per-cell cache.
    max_worker_rss_mb : float
        Largest peak resident memory reported by a worker that computed a cell.
    """

    features_path: Path
    failures_path: Path
    n_cells: int
    n_failed: int
    n_computed: int
    n_from_cache: int
    max_worker_rss_mb: float


def find_nwb_files(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Expand files and directories into the list of NWB files to extract.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (taken as given, whatever their suffix) and directories
        (searched recursively for ``*.nwb``).

    Returns
    -------
    list of Path
        Files in the order given, each directory's files sorted.

    Raises
    ------
    InputError
        A path does not exist, no NWB file is found, or two files share a
        stem (the stem is the cell id).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.nwb")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"input path {p} does not exist; pass NWB files or directories containing them")
    if not files:
        raise InputError(f"no .nwb files found in {', '.join(map(str, paths)) or 'the inputs'}; "
                         "pass NWB files or directories containing them")
    stems = Counter(f.stem for f in files)
    dup = sorted(s for s, n in stems.items() if n > 1)
    if dup:
        raise InputError(f"cell ids (file stems) must be unique; duplicated: {dup[:5]}; rename the files "
                         "or pass each file once")
    return files


def check_output(out: str | Path, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Validate the output table and cache paths before any work starts.

    An existing ``out`` is replaced only if it is a feature table written by
    :func:`extract_features` (rerunning a command resumes and rewrites it);
    anything else there is refused rather than overwritten.

    Parameters
    ----------
    out : path
        Parquet feature table to write.
    cache_dir : path, optional
        Per-cell cache directory (default ``<out>.cache``).

    Returns
    -------
    (Path, Path)
        ``out`` and the cache directory.

    Raises
    ------
    InputError
        ``out`` is a directory or a file that is not an ephys2tx feature
        table, its directory cannot be created or written, or ``cache_dir``
        is a file.
    """
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else out.with_name(out.name + ".cache")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name such as {out / 'features.parquet'}")
    if out.exists() and not _is_feature_table(out):
        raise InputError(f"--out {out} exists and is not a feature table written by `ephys2tx extract`; "
                         "refusing to overwrite it: choose another --out or remove the file")
    if cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"cache directory {cache_dir} exists and is not a directory; "
                         "pass another --cache-dir or remove the file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory {out.parent}: {exc.strerror or exc}") from exc
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"cannot write to the output directory {out.parent}; choose another --out")
    return out, cache_dir


def _is_feature_table(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return META_FAMILIES in (pq.read_schema(path).metadata or {})
    except Exception:  # not parquet, unreadable, ...
        return False


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
    """Extract one cell into the cache (no-op when already cached).

    Runs in a worker. Any error of the cell becomes a ``"failed"`` record with
    its reason; the record is written to the cache before returning.

    Parameters
    ----------
    path : str
        NWB file of the cell.
    settings : dict
        ``ap_window``, ``compact`` and optionally ``summary`` (part of the cache key).
    cache_dir : str
        Per-cell cache directory.

    Returns
    -------
    dict
        Small status: ``cell_id``, ``status`` (``"ok"``/``"failed"``),
        ``from_cache`` and the worker's ``max_rss_mb``.
    """
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
    return _status(record, from_cache, peak_rss_mb())


def _status(record: dict, from_cache: bool, rss_mb: float) -> dict:
    return {"cell_id": record["cell_id"], "status": record["status"], "from_cache": from_cache,
            "max_rss_mb": rss_mb}


def warm_up_worker(limit_blas_threads: bool = False) -> None:
    """Import ipfx and parse the stimulus ontology once in this process.

    Used as the process-pool initializer (and called in the parent before a
    fork-based pool starts, so forked workers inherit the imports instead of
    each paying the ~2 s of CPU they take).

    Parameters
    ----------
    limit_blas_threads : bool
        Limit BLAS/OpenMP pools to one thread, so N workers do not
        oversubscribe N cores. Only for worker processes: it is process-wide.
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


def _warm_up_dask_worker(client_pid: int) -> None:
    """Warm up a Dask worker; BLAS threads are limited only outside the client's process."""
    warm_up_worker(limit_blas_threads=os.getpid() != client_pid)


def _run_local(files, settings, cache_dir, workers, on_done):
    warm_up_worker()
    if workers <= 1:
        for f in files:
            on_done(process_cell(str(f), settings, str(cache_dir)))
        return
    # Cells are handed out one at a time (each takes ~0.5 s of CPU, so queueing overhead
    # is negligible and the load stays balanced across workers).
    with ProcessPoolExecutor(max_workers=workers, initializer=warm_up_worker, initargs=(True,)) as pool:
        futures = [pool.submit(process_cell, str(f), settings, str(cache_dir)) for f in files]
        for fut in as_completed(futures):
            on_done(fut.result())


def connect_scheduler(address: str):
    """Connect to an existing Dask distributed scheduler.

    Parameters
    ----------
    address : str
        Scheduler address, e.g. ``tcp://host:8786``.

    Returns
    -------
    distributed.Client

    Raises
    ------
    InputError
        Malformed address, or no scheduler answers within :data:`SCHEDULER_TIMEOUT`.
    """
    from distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import backends

    hint = "give the scheduler address, e.g. tcp://host:8786"
    try:  # checked here: Client() on a malformed address leaves noise at interpreter exit
        scheme, location = parse_address(address)
        parse_host_port(location)
    except ValueError as exc:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address ({exc}); {hint}") from exc
    if scheme not in backends:
        raise InputError(f"--scheduler {address!r} has unknown scheme {scheme!r} "
                         f"(known: {', '.join(backends)}); {hint}")
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT)
    except OSError as exc:
        raise InputError(f"cannot connect to the Dask scheduler at {address}: {exc}; start it with "
                         "`dask scheduler` (and workers with `dask worker ADDRESS`) or check the address") from exc


def _run_dask(files, settings, cache_dir, client, on_done):
    from distributed import as_completed as dask_as_completed

    client.run(_warm_up_dask_worker, os.getpid())
    futures = client.map(process_cell, [str(f) for f in files], settings=settings,
                         cache_dir=str(cache_dir), pure=False)
    for fut in dask_as_completed(futures):
        on_done(fut.result())


def available_cores() -> int:
    """CPU cores this process may run on (the default number of ``--workers``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        Output parquet file; failures go to ``<out>.failures.csv``. Both are
        written atomically (temporary file, then ``os.replace``).
    ap_window : float
        AP waveform window after threshold, seconds (ipfx default 0.003).
    compact : bool
        Resample families to 498 values in total (see ``vectors.COMPACT_LAYOUT``).
    summary : bool
        Also compute the ``summary__*`` IPFX summary features (from the same
        spike analyses as the vectors, so they add little time; see docs/nwb.md).
    workers : int
        Local worker processes (1 = in-process).
    scheduler : str or distributed.Client, optional
        Address of an existing Dask distributed scheduler, or a client; overrides
        ``workers``. Workers must see the input files and ``cache_dir`` at the
        same paths.
    cache_dir : path, optional
        Per-cell cache (default ``<out>.cache``); rerunning resumes from it.
    progress : callable, optional
        Called as ``progress(done, failed, remaining)`` once all arguments are
        validated (``done = 0``) and after each cell.

    Returns
    -------
    ExtractionResult

    Raises
    ------
    InputError
        Bad arguments or paths (see :func:`find_nwb_files`, :func:`check_output`,
        :func:`connect_scheduler`), checked before any cell is processed.
        A failing cell is never an error: it is recorded in the failures table.
    """
    if not 0 < ap_window <= 0.05:
        raise InputError(f"ap_window={ap_window} s is outside (0, 0.05]; use e.g. 0.003")
    if int(workers) < 1:
        raise InputError(f"workers={workers} must be >= 1")
    files = find_nwb_files(paths)
    out, cache_dir = check_output(out, cache_dir)
    settings = {"ap_window": float(ap_window), "compact": bool(compact)}
    if not summary:  # only then, so caches written with summaries stay valid
        settings["summary"] = False

    client = connect_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    try:
        state = _run(files, settings, cache_dir, workers, client, progress)
    finally:
        if client is not scheduler:
            client.close()

    records = [cache.read(cache_dir, cache.cell_key(f, settings)) for f in files]
    missing = [str(f) for f, r in zip(files, records) if r is None]
    if missing:
        raise InputError(f"no result in the cache {cache_dir} for {len(missing)} cells (e.g. {missing[0]}); "
                         "Dask workers must see the cache directory at the same path (shared filesystem)")
    table, failures = _assemble_table(records)
    failures_path = out.with_name(out.name + ".failures.csv")
    _write_parquet(table, out, settings)
    _write_failures(failures, failures_path)
    return ExtractionResult(out, failures_path, n_cells=len(table), n_failed=len(failures),
                            n_computed=state["computed"], n_from_cache=state["cached"],
                            max_worker_rss_mb=state["rss"])


def _run(files, settings, cache_dir, workers, client, progress) -> dict:
    """Process every cell not yet in the cache; return the counts."""
    state = {"done": 0, "failed": 0, "computed": 0, "cached": 0, "rss": 0.0}

    def on_done(status):
        state["done"] += 1
        state["failed"] += status["status"] != "ok"
        state["cached" if status["from_cache"] else "computed"] += 1
        state["rss"] = max(state["rss"], status["max_rss_mb"])
        if progress is not None:
            progress(state["done"], state["failed"], len(files) - state["done"])

    if progress is not None:  # everything is validated: the run starts
        progress(0, 0, len(files))
    pending = []
    for f in files:  # cached cells are counted at once; no worker starts for them
        record = cache.read(cache_dir, cache.cell_key(f, settings))
        if record is None:
            pending.append(f)
        else:
            on_done(_status(record, from_cache=True, rss_mb=0.0))
    if pending and client is not None:
        _run_dask(pending, settings, cache_dir, client, on_done)
    elif pending:
        _run_local(pending, settings, cache_dir, min(int(workers), len(pending)), on_done)
    return state


def _assemble_table(records):
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
    arrow = arrow.replace_schema_metadata(meta)
    replace_atomically(out, lambda fh: pq.write_table(arrow, fh))


def _write_failures(failures: list[dict], path: Path) -> None:
    def write(fh):
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=["cell_id", "path", "reason"])
        writer.writeheader()
        writer.writerows(sorted(failures, key=lambda r: r["cell_id"]))
        text.flush()
        text.detach()  # leave the binary handle open for replace_atomically

    replace_atomically(path, write)


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """A table written by :func:`extract_features`, as stored.

    Attributes
    ----------
    frame : DataFrame
        Every column of the file (index: cell id as str): the family columns,
        the ``summary__*`` columns and any column added later (e.g. labels).
    families : dict
        Ordered family name -> column names (the 12 families).
    summary_columns : list of str
        The IPFX summary feature columns (in no family).
    settings : dict
        Extraction settings (``ap_window``, ``compact``, ...).
    """

    frame: pd.DataFrame
    families: dict[str, list[str]]
    summary_columns: list[str]
    settings: dict

    @property
    def feature_columns(self) -> list[str]:
        """The family columns, family by family."""
        return [c for cols in self.families.values() for c in cols]


def read_feature_table(path: str | Path) -> FeatureTable:
    """Read a parquet table written by :func:`extract_features` with its metadata.

    Raises
    ------
    InputError
        Missing or unreadable file, or a parquet file without the family map
        (not written by ``ephys2tx extract``).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"feature table {path} not found; create it with `ephys2tx extract`")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as parquet: {first}") from exc
    meta = table.schema.metadata or {}
    if META_FAMILIES not in meta:
        raise InputError(f"{path} has no '{META_FAMILIES.decode()}' schema metadata; it was not written "
                         "by `ephys2tx extract` (or was re-saved without its metadata)")
    frame = table.to_pandas()
    frame.index = frame.index.astype(str)
    return FeatureTable(frame=frame, families=json.loads(meta[META_FAMILIES]),
                        summary_columns=json.loads(meta.get(META_SUMMARY, b"[]")),
                        settings=json.loads(meta.get(META_SETTINGS, b"{}")))


def load_feature_table(path: str | Path, include_summary: bool = False) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Read the features and family map of a table written by :func:`extract_features`.

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
    table = read_feature_table(path)
    columns = table.feature_columns + (table.summary_columns if include_summary else [])
    return table.frame[columns].astype(np.float64), table.families

"""Parallel, resumable extraction of IPFX feature vectors from NWB 2 and Axon ABF files.

Each cell is processed by :func:`ephys2tx.features.nwb.vectors.extract_cell`
(NWB) or :func:`ephys2tx.features.nwb.abf.extract_abf_cell` (ABF) in a worker
(local process pool, or a Dask distributed cluster) which writes its result
-- features or failure reason -- to a per-cell cache file at once (atomic
rename; ``.npz`` arrays + JSON, never pickle).  The table is assembled from
the cache at the end, so a killed or interrupted run restarted with the same
arguments recomputes only the missing cells.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import os
import shutil
import resource
import stat
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ephys2tx.safety import releases_claims as _releases_claims
from ephys2tx.io import remove_stale_temporaries, replace_atomically
from ephys2tx.errors import InputError

from . import cache
from .abf import is_abf
from .adapter import CellFailure
from .vectors import COMPACT_FAMILIES, FAMILIES, SUMMARY_FEATURES

from ephys2tx.data.extracted import (META_FAMILIES, META_NOTES, META_SETTINGS, META_SUMMARY,  # noqa: F401
                                     FeatureTable, read_feature_table)
SUMMARY_PREFIX = "summary__"
FAILURE_COLUMNS = ("cell_id", "path", "reason")
#: Most local worker processes (``--workers``): each holds a cell's sweeps in memory.
MAX_WORKERS = 256
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
        Rows of each (skipped input entries count as failed).
    n_computed, n_from_cache : int
        Cells extracted by this run and cells taken from the per-cell cache.
    max_worker_rss_mb : float
        Largest peak resident memory reported by a worker that computed a cell.
    notes : dict
        Cell id -> what could not be computed for an accepted cell and why
        (e.g. an ABF cell without a ramp protocol).
    """

    features_path: Path
    failures_path: Path
    n_cells: int
    n_failed: int
    n_computed: int
    n_from_cache: int
    max_worker_rss_mb: float
    notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Recordings found in the inputs.

    Attributes
    ----------
    nwb, abf : list of Path
        NWB files and ABF files, in input order (directories sorted).
    skipped : list of dict
        Entries that cannot be read (symlink loops, dangling links,
        unreadable folders, special files), with ``cell_id, path, reason``.
    """

    nwb: list
    abf: list
    skipped: list


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` (named like a recording) cannot be read as a file, or None if it can."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "skipped: symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"skipped: dangling symbolic link to {os.readlink(path)}"
        return f"skipped: cannot read ({exc.strerror or exc})"
    except RuntimeError:  # pragma: no cover - loops reported as RuntimeError by some Pythons
        return "skipped: symbolic link loop"
    if stat.S_ISDIR(mode):
        return None  # the caller decides what a folder means
    if not stat.S_ISREG(mode):
        return "skipped: not a regular file (FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return "skipped: no permission to read the file"
    return None


def _walk(root: Path, suffixes: tuple, skipped: list) -> list[Path]:
    """Files under ``root`` with one of ``suffixes`` (any case); problems go to ``skipped``."""
    found = []

    def on_error(exc: OSError):
        where = Path(exc.filename) if exc.filename else root
        skipped.append({"cell_id": printable(where.name), "path": str(where),
                        "reason": f"skipped folder: cannot list it ({exc.strerror or exc})"})

    for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=False):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            path = Path(folder) / name
            if path.suffix.lower() not in suffixes:
                continue
            problem = _entry_problem(path)
            if problem is None and path.is_file():
                found.append(path)
            elif problem is not None:
                skipped.append({"cell_id": printable(path.stem), "path": str(path), "reason": problem})
    return found


def find_inputs(paths: Iterable[str | Path] | str | Path) -> Inputs:
    """Expand files and directories into the recordings to extract.

    Directories are searched recursively for ``*.nwb`` and ``*.abf`` files
    (symbolic links to folders are not followed). Entries that cannot be
    read (symlink loops, dangling links, unreadable folders) are skipped and
    recorded with their reason; they never stop the run.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (taken as given: ``.abf`` files are read as ABF, any other as
        NWB) and directories.

    Returns
    -------
    Inputs

    Raises
    ------
    InputError
        A path given does not exist or is unreadable, or no recording is found.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    nwb: list[Path] = []
    abf: list[Path] = []
    skipped: list[dict] = []
    for p in paths:
        problem = _entry_problem(p)
        if problem is not None and not p.is_dir():
            if not os.path.lexists(p):
                raise InputError(f"input path {p} does not exist; pass NWB/ABF files or directories containing them")
            raise InputError(f"input path {p} cannot be read ({problem.removeprefix('skipped: ')}); "
                             "pass NWB/ABF files or directories containing them")
        if p.is_dir():
            for f in _walk(p, (".nwb", ".abf"), skipped):
                (abf if is_abf(f) else nwb).append(f)
        else:
            (abf if is_abf(p) else nwb).append(p)
    if not nwb and not abf:
        raise InputError(f"no .nwb or .abf files found in {', '.join(map(str, paths)) or 'the inputs'}; "
                         "pass NWB/ABF files or directories containing them")
    return Inputs(nwb=nwb, abf=abf, skipped=skipped)


def _unique_ids(cells: list[tuple[str, Path]]) -> None:
    stems = Counter(cid for cid, _ in cells)
    dup = sorted(s for s, n in stems.items() if n > 1)
    if dup:
        first = [str(path) for cid, path in cells if cid == dup[0]]
        raise InputError(f"cell ids (file stems, or folder names for ABF folders) must be unique; duplicated: "
                         f"{dup[:5]} ({dup[0]!r}: {' and '.join(first[:2])}); rename the files or pass each file once")


def check_output(out: str | Path, cache_dir: str | Path | None = None, overwrite: bool = False,
                 inputs: Iterable = ()) -> tuple[Path, Path]:
    """Validate every output location before any work starts.

    ``out`` and ``<out>.failures.csv`` must not exist, unless ``overwrite``;
    even then, only files that ``ephys2tx extract`` wrote are replaced (a
    parquet table carrying the ephys2tx family map; a CSV whose header is
    ``cell_id,path,reason``). Nothing is created here.

    Parameters
    ----------
    out : path
        Parquet feature table to write.
    cache_dir : path, optional
        Per-cell cache directory (default ``<out>.cache``).
    overwrite : bool
        Replace outputs of an earlier ``ephys2tx extract`` run.
    inputs : iterable of path
        The files and folders given as inputs: ``out`` and the cache may not
        be one of them, hold one, or lie inside an input folder.

    Returns
    -------
    (Path, Path)
        ``out`` and the cache directory.

    Raises
    ------
    InputError
        An output exists (without ``overwrite``) or is not ephys2tx's, a
        location is a directory or not writable, or ``cache_dir`` is a file.
    """
    from ephys2tx.safety import check_cache_dir, check_location, check_writable_dir, claim_output

    out = Path(out).expanduser()
    inputs = list(inputs)
    check_location(out, option="--out", inputs=inputs)
    claim_output(out, option="--out")  # one extract process per output (held until it ends)
    if out.suffix.lower() not in (".parquet", ".pq") and not out.is_dir():
        raise InputError(f"--out {out} must name a parquet file (suffix .parquet), e.g. "
                         f"{out.with_name(out.stem + '.parquet')}")
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else out.with_name(out.name + ".cache")
    failures = failures_path_for(out)
    # a probe, not os.access: finds a read-only file system or folder also when running as root
    check_writable_dir(out.parent, what="--out", target=out)
    check_location(cache_dir, option="--cache-dir", inputs=inputs)
    check_cache_dir(cache_dir, what="--cache-dir", outputs=(out, failures))
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name such as {out / 'features.parquet'}")
    for path, ours, what in ((out, _is_feature_table, "a feature table"),
                             (failures, _is_failures_table, "a failures list")):
        if not os.path.lexists(path):
            continue
        if path.is_dir():
            raise InputError(f"{path} is a directory; choose another --out")
        if not overwrite:
            raise InputError(f"{path} exists; refusing to overwrite it: pass --overwrite to replace the output "
                             "of an earlier `ephys2tx extract` run, or choose another --out")
        if not ours(path):
            raise InputError(f"{path} exists and is not {what} written by `ephys2tx extract`; refusing to "
                             "overwrite it even with --overwrite: choose another --out or remove the file")
    if os.path.lexists(cache_dir) and not cache_dir.is_dir():
        raise InputError(f"cache directory {cache_dir} exists and is not a directory; "
                         "pass another --cache-dir or remove the file")
    check_writable_dir(cache_dir, what="--cache-dir")
    return out, cache_dir


def failures_path_for(out: Path) -> Path:
    """``<out>.failures.csv``."""
    return out.with_name(out.name + ".failures.csv")


def _is_feature_table(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return META_FAMILIES in (pq.read_schema(path).metadata or {})
    except Exception:  # not parquet, unreadable, ...
        return False


def _is_failures_table(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.readline().rstrip("\r\n") == ",".join(FAILURE_COLUMNS)
    except (OSError, UnicodeDecodeError):
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
        NWB file, ABF file or folder of ABF files (one cell).
    settings : dict
        ``ap_window``, ``compact``, optionally ``summary`` and, for ABF cells,
        ``abf`` (the protocol map). Part of the cache key.
    cache_dir : str
        Per-cell cache directory.

    Returns
    -------
    dict
        Small status: ``cell_id``, ``status`` (``"ok"``/``"failed"``),
        ``from_cache``, the worker's ``max_rss_mb``, and ``path`` and ``key``:
        the cache entry written (the file's identity when the cell was read,
        so a file changed or removed later in the run keeps its result).
    """
    cache_path = Path(cache_dir)
    key = cache.cell_key(path, settings)
    record = cache.read(cache_path, key)
    from_cache = record is not None
    if record is None:
        record = {"cell_id": _cell_id(Path(path)), "path": str(path)}
        # ipfx/hdmf warn about odd sweeps ("Could not find stimulus: N/A") on stderr; a cell's
        # problem is its failure reason, so the terminal keeps the command's own lines only
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(ipfx|hdmf|pynwb)(\.|$)")
            record = _extract_record(record, path, settings)
        cache.write_atomic(cache_path, key, record)
    return {**_status(record, from_cache, peak_rss_mb()), "path": str(path), "key": key}


def _extract_record(record: dict, path: str, settings: dict) -> dict:
    """``record`` completed with the cell's features (status ok) or its failure reason."""
    try:
        options = dict(ap_window=settings["ap_window"], compact=settings["compact"],
                       summary=settings.get("summary", True))
        if "abf" in settings:
            from .abf import extract_abf_cell

            out = extract_abf_cell(path, settings["abf"], **options)
        else:
            from .vectors import extract_cell

            out = extract_cell(path, **options)
        record.update(status="ok", reason="", **out)
    except CellFailure as exc:
        record.update(status="failed", reason=str(exc))
    except Exception as exc:  # never let one cell stop the run
        record.update(status="failed", reason=f"unexpected {type(exc).__name__}: {exc}")
    return record


def _cell_id(path: Path) -> str:
    return printable(path.name if path.is_dir() else path.stem)


def printable(text: str) -> str:
    """``text`` as UTF-8 text: the bytes of a file name that is not UTF-8 (Python reads them as
    lone surrogates, which no UTF-8 file can hold) are written as ``\\xe9`` escapes.

    The cell ids, paths and reasons written to the table and the failures list go through it
    (a name such as ``caf\\xe9.nwb`` from a Latin-1 file system stopped the whole run when the
    failures list was written, after the table).
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _status(record: dict, from_cache: bool, rss_mb: float) -> dict:
    return {"cell_id": record["cell_id"], "status": record["status"], "from_cache": from_cache,
            "max_rss_mb": rss_mb}


def warm_up_worker(limit_blas_threads: bool = False) -> None:
    """Import ipfx and parse the stimulus ontology once in this process.

    Used as the worker initializer (and called in the parent before the
    workers are forked, so they inherit the imports instead of each paying
    the ~2 s of CPU they take).

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


def _run_local(cells, cache_dir, workers, on_done, on_lost):
    """Process ``cells`` (``(path, settings)`` pairs) in this process or in worker processes.

    Worker processes die with this one; a cell whose worker dies is retried
    once in a fresh worker and then reported through ``on_lost``.
    """
    from .workers import run_tasks

    warm_up_worker()
    if workers <= 1:
        for path, settings in cells:
            on_done(process_cell(str(path), settings, str(cache_dir)))
        return
    # Cells are handed out one at a time (each takes ~0.5-2 s of CPU, so queueing
    # overhead is negligible and the load stays balanced across workers).
    run_tasks(process_cell, [(str(path), settings, str(cache_dir)) for path, settings in cells], workers,
              on_result=on_done, on_lost=lambda lost: on_lost(lost.task[0], lost.task[1], lost.describe()),
              initializer=warm_up_worker, initargs=(True,))


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


def _run_dask(cells, cache_dir, client, on_done):
    from distributed import as_completed as dask_as_completed

    client.run(_warm_up_dask_worker, os.getpid())
    futures = [client.submit(process_cell, str(path), settings, str(cache_dir), pure=False)
               for path, settings in cells]
    try:
        for fut in dask_as_completed(futures):
            on_done(fut.result())
    except BaseException:  # Ctrl-C or an error: queued cells are cancelled, not run
        client.cancel(futures)
        raise


def available_cores() -> int:
    """CPU cores this process may run on (the default number of ``--workers``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@_releases_claims
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
    protocol_map: str | Path | dict | None = None,
    overwrite: bool = False,
) -> ExtractionResult:
    """Compute IPFX feature vectors and summary features for every cell and write a parquet table.

    Parameters
    ----------
    paths : path or sequence of paths
        NWB 2 files (one cell each), ABF files, or directories searched
        recursively for ``*.nwb`` and ``*.abf``.
    out : path
        Output parquet file; failures go to ``<out>.failures.csv``. Both are
        written atomically (temporary file, then ``os.replace``) and neither
        may exist unless ``overwrite``.
    ap_window : float
        AP waveform window after threshold, seconds (ipfx default 0.003).
    compact : bool
        The 12 families of the seed study, each resampled (498 values in total;
        see ``vectors.COMPACT_LAYOUT``).
    summary : bool
        Also compute the ``summary__*`` IPFX summary features (from the same
        spike analyses as the vectors, so they add little time; see docs/nwb.md).
    workers : int
        Local worker processes (1 = in-process; at most :data:`MAX_WORKERS`).
    scheduler : str or distributed.Client, optional
        Address of an existing Dask distributed scheduler, or a client; overrides
        ``workers``. Workers must see the input files and ``cache_dir`` at the
        same paths.
    cache_dir : path, optional
        Per-cell cache (default ``<out>.cache``); rerunning resumes from it.
    progress : callable, optional
        Called as ``progress(done, failed, remaining)`` once all arguments are
        validated (``done = 0``) and after each cell.
    protocol_map : path or dict, optional
        YAML protocol map for ABF files (required when there are any; see
        :mod:`ephys2tx.features.nwb.abf`).
    overwrite : bool
        Replace ``out`` and ``<out>.failures.csv`` if an earlier run of
        ``ephys2tx extract`` wrote them (other files are never replaced).

    Returns
    -------
    ExtractionResult

    Raises
    ------
    InputError
        Bad arguments or paths (see :func:`find_inputs`, :func:`check_output`,
        :func:`connect_scheduler`), checked before any cell is processed.
        A failing cell is never an error: it is recorded in the failures table.
    KeyboardInterrupt
        On Ctrl-C: queued cells are not started, workers are stopped, finished
        cells stay in the cache and no output is written.
    """
    from .abf import check_protocol_names, load_protocol_map, validate_protocol_map

    if not 0 < ap_window <= 0.05:
        raise InputError(f"ap_window={ap_window} s is outside (0, 0.05]; use e.g. 0.003")
    if not 1 <= int(workers) <= MAX_WORKERS:
        raise InputError(f"--workers {workers} must be between 1 and {MAX_WORKERS} (local worker processes; "
                         f"this machine has {available_cores()} cores, the default); use --scheduler to spread "
                         "the cells over a Dask cluster")
    paths_given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    inputs = find_inputs(paths_given)
    settings = {"ap_window": float(ap_window), "compact": bool(compact)}
    if not summary:  # only then, so caches written with summaries stay valid
        settings["summary"] = False
    cells = [(f, settings) for f in inputs.nwb]
    if inputs.abf:
        if protocol_map is None:
            raise InputError(f"{len(inputs.abf)} ABF file(s) found (e.g. {inputs.abf[0]}); ABF files need a "
                             "protocol map: --protocol-map map.yaml naming the long-square protocol and the "
                             "liquid junction potential (see docs/nwb.md)")
        pmap = (validate_protocol_map(protocol_map) if isinstance(protocol_map, dict)
                else load_protocol_map(protocol_map))
        check_protocol_names(inputs.abf, pmap, where="protocol map" if isinstance(protocol_map, dict)
                             else f"protocol map {protocol_map}")
        abf_settings = {**settings, "abf": pmap}
        units = inputs.abf if pmap["cells"] == "file" else list(dict.fromkeys(f.parent for f in inputs.abf))
        cells += [(u, abf_settings) for u in units]
    elif protocol_map is not None and not isinstance(protocol_map, dict):
        load_protocol_map(protocol_map)  # still validated: a bad map is an error whatever the inputs
    _unique_ids([(_cell_id(p), p) for p, _ in cells])
    out, cache_dir = check_output(out, cache_dir, overwrite=overwrite, inputs=paths_given)
    new_cache = not os.path.lexists(cache_dir)
    # folders this run creates (the cache's and the table's missing parents): removed again,
    # when still empty, if no table is written
    created = sorted({p for target in (cache_dir, out) for p in target.parents if not os.path.lexists(p)},
                     key=lambda p: -len(p.parts))

    client = connect_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    try:
        state = _run(cells, cache_dir, workers, client, progress, n_skipped=len(inputs.skipped))
    finally:
        if client is not None and client is not scheduler:
            client.close()
        remove_stale_temporaries(cache_dir, suffix=cache.SUFFIX)  # of workers killed while writing

    # Each cell's entry is found by the key it was read or written under, not by the file's
    # identity now: a file that is changed, moved or removed after its cell was done keeps it.
    records = [(cache.read(cache_dir, state["keys"][str(p)]) if str(p) in state["keys"] else None)
               or state["lost"].get(str(p)) for p, _ in cells]
    missing = [str(p) for (p, _), r in zip(cells, records) if r is None]
    if missing:
        where = ("Dask workers must see the cache directory at the same path (shared filesystem)"
                 if client is not None else "was the cache folder removed or changed during the run? "
                 "Run the command again")
        raise InputError(f"no result in the cache {cache_dir} for {len(missing)} cells (e.g. {missing[0]}); "
                         f"{where}")
    table, failures, notes = _assemble_table(records, compact=compact, summary=summary)
    failures += inputs.skipped
    if len(table) == 0 and failures:  # nothing to write: an error, not an empty table
        if new_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        first = failures[0]
        raise InputError(f"none of the {len(failures)} recording(s) could be extracted (e.g. "
                         f"{first['path']}: {first['reason']}); no table written: check that they are "
                         "NWB 2 current-clamp recordings (or ABF files with --protocol-map)")
    failures_path = failures_path_for(out)
    failures_csv = _failures_csv(failures)
    # the failures list is put in place from inside the table's write: a failure in either
    # leaves neither new file (the table's temporary file is removed), and the table comes last
    _write_parquet(table, out, settings, notes,
                   then=lambda: replace_atomically(failures_path, lambda fh: fh.write(failures_csv)))
    return ExtractionResult(out, failures_path, n_cells=len(table), n_failed=len(failures),
                            n_computed=state["computed"], n_from_cache=state["cached"],
                            max_worker_rss_mb=state["rss"], notes=notes)


def _run(cells, cache_dir, workers, client, progress, n_skipped: int = 0) -> dict:
    """Process every cell not yet in the cache; return the counts."""
    state = {"done": n_skipped, "failed": n_skipped, "computed": 0, "cached": 0, "rss": 0.0, "lost": {},
             "keys": {}}
    total = len(cells) + n_skipped

    def on_done(status):
        if "key" in status:  # where the worker wrote the cell (keyed by the file it read)
            state["keys"][status["path"]] = status["key"]
        state["done"] += 1
        state["failed"] += status["status"] != "ok"
        state["cached" if status["from_cache"] else "computed"] += 1
        state["rss"] = max(state["rss"], status["max_rss_mb"])
        if progress is not None:
            progress(state["done"], state["failed"], total - state["done"])

    def on_lost(path, settings, reason):
        record = {"cell_id": _cell_id(Path(path)), "path": str(path), "status": "failed", "reason": reason}
        state["lost"][str(path)] = record  # not cached: a later run tries the cell again
        on_done(_status(record, from_cache=False, rss_mb=0.0))

    if progress is not None:  # everything is validated: the run starts
        progress(n_skipped, n_skipped, total - n_skipped)
    pending = []
    for path, settings in cells:  # cached cells are counted at once; no worker starts for them
        key = cache.cell_key(path, settings)
        record = cache.read(cache_dir, key)
        if record is None:
            pending.append((path, settings))
        else:
            on_done({**_status(record, from_cache=True, rss_mb=0.0), "path": str(path), "key": key})
    if pending and client is not None:
        _run_dask(pending, cache_dir, client, on_done)
    elif pending:
        _run_local(pending, cache_dir, min(int(workers), len(pending)), on_done, on_lost)
    return state


def _assemble_table(records, compact: bool = False, summary: bool = True):
    families = COMPACT_FAMILIES if compact else FAMILIES
    ok = [r for r in records if r["status"] == "ok"]
    failures = [{"cell_id": r["cell_id"], "path": r["path"], "reason": r["reason"]}
                for r in records if r["status"] != "ok"]
    # Family lengths depend on the protocol (e.g. stimulus duration); cells that
    # differ from the majority cannot share columns and are recorded as failures.
    expected = {name: Counter(r["vectors"][name].size for r in ok).most_common(1)[0][0]
                for name in families} if ok else {}
    summary_names = list(SUMMARY_FEATURES) if summary else []  # a fixed schema, whatever the batch
    rows, index, notes = [], [], {}
    for r in ok:
        bad = [f"{n} has {r['vectors'][n].size} values, expected {expected[n]}"
               for n in families if r["vectors"][n].size != expected[n]]
        if bad:
            failures.append({"cell_id": r["cell_id"], "path": r["path"],
                             "reason": "feature-vector length differs from other cells (different protocol?): "
                                       + "; ".join(bad)})
            continue
        rows.append(np.concatenate([r["vectors"][n] for n in families]
                                   + [np.array([r["summary"].get(k, np.nan) for k in summary_names])]))
        index.append(r["cell_id"])
        if r.get("notes"):
            notes[r["cell_id"]] = list(r["notes"])
    columns = [f"{n}__{k:04d}" for n in families for k in range(expected.get(n, 0))]
    columns += [SUMMARY_PREFIX + k for k in summary_names]
    table = pd.DataFrame(np.vstack(rows) if rows else np.empty((0, len(columns))),
                         index=pd.Index(index, name="cell_id", dtype=object), columns=columns, dtype=np.float64)
    return table, failures, notes


def _write_parquet(table: pd.DataFrame, out: Path, settings: dict, notes: dict | None = None,
                   then=None) -> None:
    """Write the feature table atomically; ``then()`` runs after the table's bytes are written
    and before they are renamed into place (an error in it leaves the old table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    families = {n: [c for c in table.columns if c.startswith(n + "__")] for n in FAMILIES}
    families = {n: cols for n, cols in families.items() if cols}
    summary = [c for c in table.columns if c.startswith(SUMMARY_PREFIX)]
    arrow = pa.Table.from_pandas(table, preserve_index=True)
    meta = dict(arrow.schema.metadata or {})
    meta[META_FAMILIES] = json.dumps(families).encode()
    meta[META_SUMMARY] = json.dumps(summary).encode()
    meta[META_SETTINGS] = json.dumps(settings).encode()
    meta[META_NOTES] = json.dumps(notes or {}).encode()
    arrow = arrow.replace_schema_metadata(meta)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(fh):
        pq.write_table(arrow, fh)
        if then is not None:
            then()

    replace_atomically(out, write)


def _failures_csv(failures: list[dict]) -> bytes:
    """The failures list as UTF-8 CSV bytes (``cell_id,path,reason``; file names that are not
    UTF-8 escaped, see :func:`printable`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(FAILURE_COLUMNS))
    writer.writeheader()
    writer.writerows({k: printable(str(r[k])) for k in FAILURE_COLUMNS}
                     for r in sorted(failures, key=lambda r: printable(str(r["cell_id"]))))
    return text.getvalue().encode("utf-8")


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
        Ordered family name -> column names (14 families; 12 for a compact table).
    """
    table = read_feature_table(path)
    columns = table.feature_columns + (table.summary_columns if include_summary else [])
    return table.frame[columns].astype(np.float64), table.families

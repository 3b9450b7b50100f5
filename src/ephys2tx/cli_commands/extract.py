"""The raw-data commands: ``ephys2tx extract`` (IPFX feature vectors from NWB 2 files) and the
body of ``ephys2tx fetch --dandiset`` (NWB files of chosen cells from DANDI)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def extract_command(
    inputs: List[Path] = typer.Argument(..., help="NWB 2 files or directories (searched for *.nwb)."),
    out: Path = typer.Option(Path("features.parquet"), "--out", "-o",
                             help="Output parquet table (failures: <out>.failures.csv)."),
    ap_window: float = typer.Option(0.003, "--ap-window", help="AP waveform window after threshold (s)."),
    compact: bool = typer.Option(False, "--compact", help="Resample to 498 values (12 families kept)."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Also compute IPFX summary features."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j",
                                          help="Local worker processes (default: all available cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="Dask scheduler address, e.g. tcp://host:8786 (replaces --workers)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Per-cell cache (default <out>.cache)."),
) -> None:
    """Extract the 12 IPFX feature-vector families and summary features, one row per cell.

    Rerunning the same command after an interruption resumes from the cache.
    """
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ephys2tx.features.nwb import extract_features
    from ephys2tx.features.nwb.extract import available_cores

    with contextlib.ExitStack() as stack:
        bars: list = []  # the bar starts once extract_features has validated every argument

        def progress(done: int, failed: int, remaining: int) -> None:
            if not bars:
                bar = stack.enter_context(Progress(
                    TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("done, {task.fields[failed]} failed, {task.fields[remaining]} remaining"),
                    TimeRemainingColumn(), console=Console(stderr=True)))
                bars.append((bar, bar.add_task("extract", total=done + remaining, failed=0,
                                               remaining=remaining)))
            bar, task = bars[0]
            bar.update(task, completed=done, failed=failed, remaining=remaining)

        result = extract_features(inputs, out, ap_window=ap_window, compact=compact, summary=summary,
                                  workers=available_cores() if workers is None else workers,
                                  scheduler=scheduler, cache_dir=cache_dir, progress=progress)
    typer.echo(f"{result.n_cells} cells -> {result.features_path}; {result.n_failed} failed -> "
               f"{result.failures_path} ({result.n_from_cache} from cache)")


def fetch_dandi(dandiset: str, cells: List[str], out: Path, version: Optional[str] = None) -> None:
    """Body of ``ephys2tx fetch --dandiset ID --cells IDS``: download ``<out>/<cell id>.nwb`` files.

    Prints one line per cell; exits with code 1 when some cells could not be
    fetched (they are listed; rerunning fetches only what is missing).
    """
    from rich.console import Console

    from ephys2tx.features.nwb.dandi import fetch_dandi_cells

    console = Console(stderr=True, highlight=False)
    results = fetch_dandi_cells(
        dandiset, cells, out, version=version,
        on_cell=lambda r: console.print(f"{r.status:>10}  {r.cell_id}  {r.asset_path or r.reason}"))
    failed = [r for r in results if r.status == "failed"]
    typer.echo(f"{len(results) - len(failed)} of {len(results)} cells in {out}; next: ephys2tx extract {out}")
    if failed:
        raise typer.Exit(1)

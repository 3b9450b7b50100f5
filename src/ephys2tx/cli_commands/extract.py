"""``ephys2tx extract``: IPFX feature vectors from NWB 2 files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def extract_command(
    inputs: List[Path] = typer.Argument(..., help="NWB 2 files or directories (searched for *.nwb)."),
    out: Path = typer.Option(Path("features.parquet"), "--out", "-o", help="Output parquet table."),
    ap_window: float = typer.Option(0.003, help="AP waveform window after threshold (s)."),
    compact: bool = typer.Option(False, "--compact", help="Resample to 498 values (12 families)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Local worker processes."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address, e.g. tcp://host:8786."),
    cache_dir: Optional[Path] = typer.Option(None, help="Per-cell cache (default <out>.cache)."),
) -> None:
    """Extract the 12 IPFX feature-vector families and summary features, one row per cell."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ephys2tx.features.nwb import extract_features
    from ephys2tx.features.nwb.extract import find_nwb_files

    total = len(find_nwb_files(inputs))
    with Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("failed {task.fields[failed]}  remaining {task.fields[remaining]}"),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("extract", total=total, failed=0, remaining=total)

        def progress(done: int, failed: int, remaining: int) -> None:
            bar.update(task, completed=done, failed=failed, remaining=remaining)

        result = extract_features(inputs, out, ap_window=ap_window, compact=compact, workers=workers,
                                  scheduler=scheduler, cache_dir=cache_dir, progress=progress)
    typer.echo(f"{result.n_cells} cells -> {result.features_path}; {result.n_failed} failed -> "
               f"{result.failures_path} ({result.n_from_cache} from cache)")

"""The raw-data commands: ``ephys2tx extract`` (IPFX feature vectors from NWB 2 files) and the
body of ``ephys2tx fetch --dandiset`` (NWB files of chosen cells from DANDI)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ephys2tx.cli_commands.options import parse_path


def extract_command(
    inputs: List[Path] = typer.Argument(..., help="NWB 2 / Axon ABF files or directories (searched for *.nwb, *.abf).", parser=parse_path),
    out: Path = typer.Option(Path("features.parquet"), "--out", "-o",
                             help="Output parquet table (failures: <out>.failures.csv).", parser=parse_path),
    ap_window: float = typer.Option(0.003, "--ap-window", help="AP waveform window after threshold (s)."),
    compact: bool = typer.Option(False, "--compact",
                                 help="The seed study's 12 families, resampled to 498 values (a subset)."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Also compute IPFX summary features."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j",
                                          help="Local worker processes (default: all available cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="Dask scheduler address, e.g. tcp://host:8786 (replaces --workers)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Per-cell cache (default <out>.cache).", parser=parse_path),
    protocol_map: Optional[Path] = typer.Option(
        None, "--protocol-map", help="YAML protocol map for ABF files: long-square protocol, junction potential.", parser=parse_path),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the table and failures list of an earlier extract run."),
) -> None:
    """Extract IPFX feature-vector families and summary features, one row per cell.

    Rerunning the same command after an interruption resumes from the cache.
    Ctrl-C stops at once (exit 130; 143 after SIGTERM); finished cells stay in the cache.
    """
    import contextlib
    import signal

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ephys2tx.features.nwb import extract_features
    from ephys2tx.features.nwb.extract import available_cores
    from ephys2tx.safety import Interrupted

    console = Console(stderr=True, highlight=False, soft_wrap=True)  # a message stays one line

    def terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (workers killed, cache kept)
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with contextlib.ExitStack() as stack:
            bars: list = []  # the bar starts once extract_features has validated every argument

            def progress(done: int, failed: int, remaining: int) -> None:
                if not bars:
                    bar = stack.enter_context(Progress(
                        TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("done, {task.fields[failed]} failed, {task.fields[remaining]} remaining"),
                        TimeRemainingColumn(), console=console, disable=not console.is_terminal))
                    bars.append((bar, bar.add_task("extract", total=done + remaining, failed=0,
                                                   remaining=remaining)))
                bar, task = bars[0]
                bar.update(task, completed=done, failed=failed, remaining=remaining)
                counts[:] = [done, failed, remaining]

            counts: list = []  # off a terminal the bar is silent: one status line on success only
            result = extract_features(inputs, out, ap_window=ap_window, compact=compact, summary=summary,
                                      workers=available_cores() if workers is None else workers,
                                      scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                                      protocol_map=protocol_map, overwrite=overwrite)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        console.print(f"aborted{name}: no table written; finished cells are kept in the cache, rerun the "
                      "same command to resume")
        # SystemExit rather than typer.Exit: the exit code must not depend on how the
        # caller maps typer's return value (cli.main is shared by every command).
        # 130 after Ctrl-C, 143 after SIGTERM, as every other command.
        raise SystemExit(128 + int(signum)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if counts and not console.is_terminal:
        done, failed, remaining = counts
        console.print(f"cells {done}/{done + remaining} done, {failed} failed, {remaining} remaining")
    typer.echo(f"{result.n_cells} cells -> {result.features_path}; {result.n_failed} failed -> "
               f"{result.failures_path} ({result.n_from_cache} from cache)")
    by_note: dict = {}
    for cell_id, notes in result.notes.items():
        for note in notes:
            by_note.setdefault(note.split(":")[0], []).append(cell_id)
    for note, cells in sorted(by_note.items()):
        typer.echo(f"note: {len(cells)} cell(s) (e.g. {cells[0]}): {note}")


def fetch_dandi(dandiset: str, cells: List[str], out: Path, version: Optional[str] = None) -> None:
    """Body of ``ephys2tx fetch --dandiset ID --cells IDS``: download ``<out>/<cell id>.nwb`` files.

    Prints one line per cell on stdout. When some cells could not be fetched,
    the others are kept and the command ends with one error line (exit code
    2) naming them; rerunning fetches only what is missing.
    """
    from ephys2tx.errors import InputError
    from ephys2tx.features.nwb.dandi import fetch_dandi_cells

    results = fetch_dandi_cells(
        dandiset, cells, out, version=version,
        on_cell=lambda r: typer.echo(f"{r.status:>10}  {r.cell_id}  {r.asset_path or r.reason}"))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise InputError(f"{len(failed)} of {len(results)} cells could not be fetched from dandiset {dandiset} "
                         f"(e.g. {first.cell_id}: {first.reason}); the other files are in {out}; rerun to retry")
    typer.echo(f"{len(results)} of {len(results)} cells in {out}; next: ephys2tx extract {out}")

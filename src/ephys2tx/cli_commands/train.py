"""``ephys2tx train``: fit a model on the full reference data and save a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ephys2tx.cli_commands.options import parse_path


def train_command(
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write.", parser=parse_path),
    species: str = typer.Option("mouse", "--species", help="mouse, human or both."),
    model: str = typer.Option("forest", "--model", help="forest, bilstm or transfer."),
    calibration: str = typer.Option("isotonic", help="isotonic or temperature."),
    n_splits: int = typer.Option(5, min=2, max=100,
                                 help="Cross-validation folds (metrics, calibration, OOD threshold)."),
    n_estimators: int = typer.Option(100, min=1, max=5000, help="Trees of the forest."),
    max_epochs: Optional[int] = typer.Option(None, min=1, max=100000,
                                             help="BiLSTM epochs (default: the model's)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Seed of folds and model."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory.", parser=parse_path),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the data files' sha256."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace --out if it is a model directory written by ephys2tx."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, max=256, show_default=False,
        help="Torch/BLAS/OpenMP threads (default: 1 on machines with <= 2 cores, else half the "
             "cores, at most 8)."),
) -> None:
    """Train on the full reference, record CV metrics, calibration and OOD threshold, and save."""
    from ephys2tx.workflows import train

    result = train(species, model, out, data_dir=data_dir, n_splits=n_splits,
                   calibration=calibration, n_estimators=n_estimators, max_epochs=max_epochs,
                   random_state=seed, overwrite=overwrite, verify=verify,
                   progress=lambda msg: typer.echo(msg, err=True), threads=threads)
    rec = result.model.record
    cv, cal = rec["cv"], rec["calibration"]
    typer.echo(f"{model} on {species} ({rec['n_cells']} cells, {len(result.model.features)} features): "
               f"CV accuracy {cv['accuracy']:.3f}, macro F1 {cv['macro_f1']:.3f}; ECE "
               f"{cal['ece_before']:.3f} -> {cal['ece_after']:.3f} ({cal['method']}); saved {result.path}")

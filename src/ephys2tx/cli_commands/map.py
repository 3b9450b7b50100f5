"""``ephys2tx map``: reference-map a query table on the features it shares with the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def map_command(
    input: Path = typer.Option(..., "--input", "-i", help="Feature table: CSV, Parquet or Excel."),
    species: str = typer.Option(..., "--species", help="Reference: mouse or human."),
    out: Path = typer.Option(Path("mapping"), "--out", "-o", help="Output directory (predictions.csv, report.md, figures)."),
    column_map: Optional[str] = typer.Option(None, "--column-map", help="YAML column map, or allen_celltypes / ipfx."),
    align: Optional[str] = typer.Option(None, "--align", help="Align the query to the reference first: quantile or ot."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Cell id column (default: detected)."),
    force: bool = typer.Option(False, "--force", help="Continue despite unit/range warnings."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace --out if it is a folder written by ephys2tx map."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the data files' sha256."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Reference model cache (default: user cache)."),
) -> None:
    """Train (or reuse) a reference model on the query's features, predict, and write a report."""
    from ephys2tx.mapping import map_cells

    result = map_cells(input, species, out, column_map=column_map, align=align, id_column=id_column,
                       force=force, overwrite=overwrite, data_dir=data_dir, cache_dir=cache_dir, verify=verify,
                       progress=lambda msg: typer.echo(msg, err=True))
    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    pred = result.predictions
    done = pred["predicted_subclass"] != ""
    typer.echo(f"{int(done.sum())}/{len(pred)} cells mapped on {len(result.features)} features "
               f"({'cached' if result.from_cache else 'new'} reference model, "
               f"{result.seconds:.1f} s); {int(pred['ood_flag'].fillna(False).astype(bool).sum())} "
               f"flagged out-of-distribution -> {result.out_dir}/predictions.csv, report.md")

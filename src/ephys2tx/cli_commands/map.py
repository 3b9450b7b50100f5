"""``ephys2tx map``: reference-map a query table on the features it shares with the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ephys2tx.cli_commands.options import parse_name_or_path, parse_path


def map_command(
    input: Path = typer.Option(..., "--input", "-i", help="Feature table: CSV (, or ;), TSV, Parquet or Excel (.xlsx).", parser=parse_path),
    species: str = typer.Option(..., "--species", help="Reference: mouse or human."),
    out: Path = typer.Option(Path("mapping"), "--out", "-o", help="Output directory (predictions.csv, report.md, figures).", parser=parse_path),
    column_map: Optional[str] = typer.Option(None, "--column-map", help="YAML column map, or allen_celltypes / ipfx / ipfx_record.", parser=parse_name_or_path),
    align: str = typer.Option("auto", "--align", help="Shift handling: auto (decides from the data), none, quantile, ot, moments, em, bbse, cc, cc_gen, cc_mix, ccm, ccm_gen, ccm_mix (docs/shift.md)."),
    model: Optional[str] = typer.Option(None, "--model", help="Reference model: forest, hgb, ensemble, forest_aug, bilstm (default: the shift benchmark's choice)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Cortical layer of all cells (L1, L2/3, 4, L5, L6a, 5_6, ...): a class prior from the reference's cells of that layer."),
    layer_column: Optional[str] = typer.Option(None, "--layer-column", help="Column of the input holding each cell's layer."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Explicit class mix, e.g. Lamp5=0.6,Vip=0.3,Sst=0.05,Pvalb=0.05."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Cell id column (default: detected)."),
    force: bool = typer.Option(False, "--force", help="Continue despite unit/range warnings."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace --out if it is a folder written by ephys2tx map."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory.", parser=parse_path),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the data files' sha256."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Reference model cache (default: user cache).", parser=parse_path),
) -> None:
    """Train (or reuse) a reference model on the query's features, predict, and write a report."""
    from ephys2tx.workflows import map_cells
    from ephys2tx.report.shift_report import terminal_lines

    result = map_cells(input, species, out, column_map=column_map, align=align, id_column=id_column,
                       force=force, overwrite=overwrite, data_dir=data_dir, cache_dir=cache_dir, verify=verify,
                       progress=lambda msg: typer.echo(msg, err=True), model=model, layer=layer,
                       layer_column=layer_column, prior=prior)
    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    for line, loud in terminal_lines(result.shift):
        typer.secho(line, err=True, fg="red" if loud else None, bold=loud)
    pred = result.predictions
    done = pred["predicted_subclass"] != ""
    typer.echo(f"{int(done.sum())}/{len(pred)} cells mapped on {len(result.features)} features "
               f"({'cached' if result.from_cache else 'new'} reference model, "
               f"{result.seconds:.1f} s); {int(pred['ood_flag'].fillna(False).astype(bool).sum())} "
               f"flagged out-of-distribution -> {result.out_dir}/predictions.csv, report.md")

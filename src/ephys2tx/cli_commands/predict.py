"""``ephys2tx predict``: subclass, calibrated probabilities, confidence and OOD flag per cell."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ephys2tx.cli_commands.options import parse_name_or_path, parse_path


def predict_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory (from `ephys2tx train`).", parser=parse_path),
    input: Path = typer.Option(..., "--input", "-i", help="Feature table: CSV (, or ;), TSV, Parquet or Excel (.xlsx).", parser=parse_path),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output CSV.", parser=parse_path),
    column_map: Optional[str] = typer.Option(None, "--column-map", help="YAML column map, or allen_celltypes / ipfx / ipfx_record.", parser=parse_name_or_path),
    layer: Optional[str] = typer.Option(None, "--layer", help="Cortical layer of all cells: a class prior from the reference's cells of that layer (needs the data)."),
    layer_column: Optional[str] = typer.Option(None, "--layer-column", help="Column of the input holding each cell's layer."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Explicit class mix, e.g. Lamp5=0.6,Vip=0.3,Sst=0.05,Pvalb=0.05."),
    align: str = typer.Option("auto", "--align", help="Shift handling: auto (decides from the data and says what it chose), none, em (re-estimate the query's class mix, Saerens et al. 2002), em@100 / em@300 (EM with 100 / 300 pseudo-cells of the training mix), em_test / em_test@100 (EM only if a class-mix test rejects). An adapted call keeps the model's own call beside."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Cell id column (default: detected)."),
    force: bool = typer.Option(False, "--force", help="Continue despite unit/range warnings."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace --out if it is a predictions table written by ephys2tx."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory (for --layer / --layer-column).", parser=parse_path),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the data files' sha256 (for --layer / --layer-column)."),
) -> None:
    """Predict the subclass of every cell of a table with a saved model."""
    from ephys2tx.workflows import predict

    result = predict(model, input, out, column_map=column_map, id_column=id_column, force=force,
                     overwrite=overwrite, layer=layer, layer_column=layer_column, prior=prior,
                     data_dir=data_dir, verify=verify, align=align)
    from ephys2tx.report.shift_report import terminal_lines

    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    for line, loud in terminal_lines(result.shift):
        typer.secho(line, err=True, fg="red" if loud else None, bold=loud)
    pred = result.predictions
    done = pred["predicted_subclass"] != ""
    counts = pred.loc[done, "predicted_subclass"].value_counts().to_dict()
    typer.echo(f"{int(done.sum())}/{len(pred)} cells predicted {counts}; "
               f"{int(pred['ood_flag'].fillna(False).astype(bool).sum())} flagged out-of-distribution "
               f"-> {result.path}")

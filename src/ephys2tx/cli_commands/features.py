"""``ephys2tx features``: the features each reference has, with their units."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ephys2tx.cli_commands.options import parse_path


def features_command(
    species: str = typer.Option(..., "--species", help="Reference: mouse or human."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory.", parser=parse_path),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the data files' sha256."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a Markdown table."),
) -> None:
    """List the canonical features of a reference: unit, family, cells with a value, median, source column."""
    from ephys2tx.errors import InputError
    from ephys2tx.mapping import reference_feature_table

    if species not in ("mouse", "human"):
        raise InputError(f"--species must be mouse or human, got {species!r}.")
    table = reference_feature_table(species, data_dir, verify=verify)
    if csv:
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        typer.echo(table.assign(median=table["median"].map("{:.4g}".format)).to_markdown(index=False))
    typer.echo(f"{len(table)} features; name them in a column map (docs/mapping.md) to use them.",
               err=True)

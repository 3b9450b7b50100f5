"""Parsers shared by the commands' options (``typer.Option(parser=...)``)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["parse_name_or_path", "parse_path"]


def parse_name_or_path(value) -> str:
    """The text of an option naming a file or a built-in (``--column-map``), if not empty.

    Raises
    ------
    typer.BadParameter
        The text is empty or blanks only: the CLI names the option (exit code 2).
    """
    return _not_empty(value, "a file or a name")


def _not_empty(value, what: str) -> str:
    text = str(value)
    if not text.strip():
        raise typer.BadParameter(f"the value is empty ({text!r}); give {what} (is a shell "
                                 "variable unset?)")
    return text


def parse_path(value) -> Path:
    """A path option's value, refused if empty or blanks only.

    ``Path("")`` is ``Path(".")``: an empty ``--data-dir ''`` (an unset shell
    variable in ``--out "$DIR"``) would silently mean the current folder.

    Raises
    ------
    typer.BadParameter
        The path is empty: the CLI names the option (exit code 2).
    """
    return value if isinstance(value, Path) else Path(_not_empty(value, "a path"))

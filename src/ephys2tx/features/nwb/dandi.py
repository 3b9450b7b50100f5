"""Download the NWB files of chosen cells from a DANDI dandiset (``ephys2tx fetch --dandiset``).

Files are saved as ``<out_dir>/<cell id>.nwb``, so that the cell ids of
``ephys2tx extract`` (the file stems) are the ids the user asked for.

Cells are found by their id in the asset paths. Allen Patch-seq files on
DANDI are named by *ephys session* (``sub-<donor>_ses-<session>_icephys.nwb``),
not by cell specimen id; ipfx ships the 2020 release manifests (mouse
dandiset 000020, human 000023) that map cell specimen ids to those file
names, and they are used first. Any other id is matched as a whole token of
the asset's file name (e.g. the session id of a 000636 file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import Callable, Iterable

from ephys2tx.io import remove_stale_temporaries, replace_atomically
from ephys2tx.errors import InputError

#: ipfx release manifests mapping ``cell_specimen_id`` to NWB file names.
IPFX_MANIFESTS = ("2020-06-26_mouse_file_manifest.csv", "2020-06-26_human_file_manifest.csv")


@dataclasses.dataclass(frozen=True)
class FetchedCell:
    """Outcome for one requested cell.

    Attributes
    ----------
    cell_id : str
    status : str
        ``"downloaded"``, ``"present"`` (already there, same size) or ``"failed"``.
    path : Path or None
        Local file (None when failed).
    asset_path : str
        Path of the asset in the dandiset ("" when not found).
    reason : str
        Why it failed ("" otherwise).
    """

    cell_id: str
    status: str
    path: Path | None
    asset_path: str = ""
    reason: str = ""


def parse_cell_ids(values: Iterable[str]) -> list[str]:
    """Split ``--cells`` values on commas and whitespace; keep the order, drop repeats.

    Raises
    ------
    InputError
        No id given.
    """
    ids = [t for v in values for t in re.split(r"[,\s]+", str(v)) if t]
    if not ids:
        raise InputError("no cell id given; pass --cells ID[,ID...] (cell specimen ids or ids in the file names)")
    bad = next((t for t in ids if "/" in t or "\\" in t or t.startswith(".")), None)
    if bad is not None:  # the id names the file <id>.nwb: it must stay inside --nwb-dir
        raise InputError(f"--cells {bad!r} is not a cell id (it holds a path separator or starts with "
                         "'.'); give cell specimen ids or ids in the file names, e.g. 601506507")
    return list(dict.fromkeys(ids))


def ipfx_file_names() -> dict[str, str]:
    """``cell_specimen_id -> NWB file name`` from the release manifests shipped with ipfx."""
    import pandas as pd

    names: dict[str, str] = {}
    for manifest in IPFX_MANIFESTS:
        try:
            ref = importlib.resources.files("ipfx") / "data_release" / manifest
            with importlib.resources.as_file(ref) as path:
                table = pd.read_csv(path, usecols=["file_name", "file_type", "cell_specimen_id"], dtype=str)
        except (ModuleNotFoundError, FileNotFoundError, ValueError):
            continue
        table = table[table["file_type"] == "nwb"]
        names.update(zip(table["cell_specimen_id"], table["file_name"]))
    return names


def _token_pattern(cell_id: str) -> re.Pattern:
    return re.compile(rf"(^|[^0-9A-Za-z]){re.escape(cell_id)}([^0-9A-Za-z]|$)")


def _expected_sha256(asset) -> str | None:
    try:
        return asset.get_raw_digest("dandi:sha2-256")
    except Exception:  # dandi raises NotFoundError when the archive has not computed it
        return None


def _download(asset, target: Path) -> None:
    """Download ``asset`` to ``target`` atomically, checking its sha256 when DANDI has one."""
    expected = _expected_sha256(asset)

    def write(fh):
        digest = hashlib.sha256()
        for chunk in asset.get_download_file_iter()(0):
            fh.write(chunk)
            digest.update(chunk)
        if expected is not None and digest.hexdigest() != expected:
            raise OSError(f"checksum mismatch for {asset.path} (sha256 differs from DANDI's); retry")

    remove_stale_temporaries(target.parent, target=target.name)  # of a fetch that was killed
    replace_atomically(target, write)


def _match(cell_id: str, file_names: dict[str, str], assets: list) -> list:
    if cell_id in file_names:
        name = file_names[cell_id]
        return [a for a in assets if a.path.rsplit("/", 1)[-1] == name]
    pattern = _token_pattern(cell_id)
    return [a for a in assets if a.path.endswith(".nwb") and pattern.search(a.path.rsplit("/", 1)[-1])]


def fetch_dandi_cells(dandiset: str, cells: Iterable[str], out_dir: str | Path, *, version: str | None = None,
                      client=None, on_cell: Callable[[FetchedCell], None] | None = None) -> list[FetchedCell]:
    """Download the NWB file of each requested cell from a DANDI dandiset.

    Parameters
    ----------
    dandiset : str
        Dandiset id, e.g. ``"000020"`` (Allen mouse Patch-seq) or ``"000636"``.
    cells : iterable of str
        Cell ids: cell specimen ids listed in ipfx's release manifests, or
        any id that appears as a whole token in the asset file names.
    out_dir : path
        Where ``<cell id>.nwb`` files are written (created if needed).
    version : str, optional
        Dandiset version (default: the most recent published one, else draft).
    client : dandi.dandiapi.DandiAPIClient, optional
        Client to use (default: a new ``DandiAPIClient()``; needs ``pip install dandi``).
    on_cell : callable, optional
        Called with each :class:`FetchedCell` as it completes.

    Returns
    -------
    list of FetchedCell
        One per requested cell, in order. A cell that is not found, matches
        several assets or fails to download is recorded as ``"failed"`` and
        does not stop the others. A file already present with the asset's
        size is kept (so an interrupted fetch resumes).

    Raises
    ------
    InputError
        Malformed dandiset id, no cell id, ``dandi`` not installed, or the
        dandiset cannot be listed.
    """
    if not re.fullmatch(r"\d{6}", str(dandiset)):
        raise InputError(f"--dandiset {dandiset!r} is not a DANDI id; use six digits such as 000020")
    cells = parse_cell_ids(cells)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--nwb-dir {out_dir} is a file, not a folder; choose another --nwb-dir.")
    with contextlib.ExitStack() as stack:
        if client is None:
            try:
                from dandi.dandiapi import DandiAPIClient
            except ImportError as exc:
                raise InputError("fetching from DANDI needs the dandi client: pip install dandi") from exc
            client = stack.enter_context(DandiAPIClient())
        try:
            assets = list(client.get_dandiset(str(dandiset), version).get_assets())
        except Exception as exc:  # network errors, unknown dandiset or version
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot list the assets of dandiset {dandiset}: {first}") from exc
        try:  # only now: an error above leaves no empty folder behind
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output directory {out_dir}: {exc.strerror or exc}") from exc
        file_names = ipfx_file_names()
        results = []
        for cell_id in cells:
            result = _fetch_one(cell_id, _match(cell_id, file_names, assets), out_dir, dandiset)
            results.append(result)
            if on_cell is not None:
                on_cell(result)
        return results


def _fetch_one(cell_id: str, matches: list, out_dir: Path, dandiset: str) -> FetchedCell:
    if len(matches) != 1:
        what = "no asset" if not matches else f"{len(matches)} assets ({', '.join(a.path for a in matches[:3])})"
        return FetchedCell(cell_id, "failed", None, reason=f"{what} of dandiset {dandiset} match cell {cell_id}")
    asset = matches[0]
    target = out_dir / f"{cell_id}.nwb"
    if target.is_file() and target.stat().st_size == asset.size:
        return FetchedCell(cell_id, "present", target, asset.path)
    if target.exists() or target.is_symlink():  # downloads are atomic: this file is not one of ours
        return FetchedCell(cell_id, "failed", None, asset.path,
                           f"{target} exists and differs from {asset.path} ({asset.size} bytes); it "
                           "was not written by this fetch: move it away, or choose another --nwb-dir")
    try:
        _download(asset, target)
    except Exception as exc:  # network or disk errors: record and go on with the next cell
        return FetchedCell(cell_id, "failed", None, asset.path, f"download failed: {type(exc).__name__}: {exc}")
    return FetchedCell(cell_id, "downloaded", target, asset.path)

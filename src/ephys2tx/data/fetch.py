"""Download the public data files into the data directory and verify their sha256."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ephys2tx.io import remove_stale_temporaries, replace_atomically, sha256_file
from ephys2tx.data.registry import DATASET_FILES, DataFile
from ephys2tx.errors import InputError

_CHUNK = 1 << 16

#: A download slower than this on average, after ``timeout`` seconds, is stopped (a stalled
#: transfer that trickles a byte now and then would otherwise never end).
MIN_BYTES_PER_SECOND = 1024

@dataclass(frozen=True)
class FetchRecord:
    """What happened to one file during :func:`fetch_datasets`."""

    relpath: str
    url: str
    status: str  # "downloaded" or "present"
    sha256: str
    n_bytes: int


def _read_block(response, url: str, n_bytes: int, timeout: float) -> bytes:
    """The next bytes of ``response`` (as soon as any arrive); a broken transfer is an InputError."""
    try:
        return response.read1(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:  # timeout, reset, a cut-off body
        reason = (f"no data for {timeout:g} s" if isinstance(exc, TimeoutError)
                  else f"{type(exc).__name__}: {exc}")
        raise InputError(
            f"the download of {url} broke off after {n_bytes} bytes ({reason}); nothing was kept. "
            "Check the network and run the command again, or pass --mirror with a reachable "
            "copy of the files."
        ) from exc


def _looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a download begin like an HTML page."""
    return head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml"))


def _download(url: str, destination: Path, expected_sha256: str, timeout: float,
              on_bytes: Callable[[int], None] | None) -> int:
    """Download ``url`` to ``destination`` atomically, verifying the checksum."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = 0

    def write(out) -> None:
        nonlocal n_bytes
        digest, head = hashlib.sha256(), b""  # head: the first bytes, to name a web page sent instead
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (https/http only)
        except urllib.error.HTTPError as exc:  # the server answered, with an error
            hint = ("the file is not at that address: check --mirror (the base URL of a copy of the data "
                    "folder, holding <dataset folder>/<file>)" if exc.code in (404, 410) else
                    "the server refused or failed the request: run the command again later, or pass --mirror "
                    "with a reachable copy of the files")
            raise InputError(f"cannot download {url}: the server answered HTTP {exc.code} {exc.reason}; "
                             f"{hint}.") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
            raise InputError(
                f"cannot download {url}: {exc}. Check the network, or pass --mirror "
                "with a reachable copy of the files."
            ) from exc
        started = time.monotonic()
        with response:
            while True:
                block = _read_block(response, url, n_bytes, timeout)
                if not block:
                    break
                out.write(block)
                if len(head) < 512:
                    head += block[:512 - len(head)]
                digest.update(block)
                n_bytes += len(block)
                if on_bytes is not None:
                    on_bytes(len(block))
                elapsed = time.monotonic() - started
                if elapsed > timeout and n_bytes < MIN_BYTES_PER_SECOND * elapsed:
                    raise InputError(
                        f"the download of {url} is too slow ({n_bytes} bytes in {elapsed:.0f} s, "
                        f"under {MIN_BYTES_PER_SECOND} bytes/s), so it was stopped and nothing was "
                        "kept; check the network and run the command again, or pass --mirror "
                        "with a faster copy of the files."
                    )
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and n_bytes < int(announced):
            raise InputError(
                f"the download of {url} broke off after {n_bytes} of {announced} bytes (the "
                "server closed the connection); nothing was kept. Run the command again, or "
                "pass --mirror with a reachable copy of the files."
            )
        if digest.hexdigest() != expected_sha256:
            kind = str(response.headers.get("Content-Type", "")).split(";")[0].strip().lower()
            if n_bytes == 0:
                what = "the server sent an empty file, not the data file"
            elif kind in ("text/html", "application/xhtml+xml") or _looks_like_html(head):
                what = ("the server sent a web page (text/html: an error or login page?), not the data file; "
                        "check that --mirror is the base URL of a copy of the data folder")
            else:
                what = "the source changed or the download was corrupted"
            raise InputError(
                f"checksum mismatch for {url} ({n_bytes} bytes): got sha256 {digest.hexdigest()[:12]}..., "
                f"expected {expected_sha256[:12]}...: {what}; nothing was kept. Run the command again, or "
                "report it if it persists."
            )

    replace_atomically(destination, write)
    return n_bytes


def _check_targets(root: Path, specs: list[DataFile], *, overwrite: bool) -> set[str]:
    """Check every destination before the first download; return the verified ones present.

    Raises
    ------
    InputError
        The data directory or a sub-folder is a file or not writable; a
        destination is a folder or a link; a file at a destination differs
        from the published file and ``overwrite`` is not set.
    """
    from ephys2tx.safety import check_writable_dir

    if root.exists() and not root.is_dir():
        raise InputError(f"data directory {root} is a file, not a folder; choose another --data-dir.")
    present = set()
    for spec in specs:
        target = root / spec.relpath
        check_writable_dir(target.parent, what="data folder")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise InputError(f"{target} is a folder or a link, not a data file; move it away or "
                             "choose another --data-dir.")
        if not target.exists():
            continue
        if sha256_file(target) == spec.sha256:
            present.add(spec.relpath)
        elif not overwrite:
            raise InputError(f"{target} exists and differs from the published file (sha256); it may "
                             "be your own edit, so it is kept: move it away, or pass --overwrite to "
                             "replace it with the published file.")
    return present


def fetch_datasets(
    data_dir: str | os.PathLike,
    datasets: Iterable[str] | None = None,
    *,
    mirror: str | None = None,
    force: bool = False,
    overwrite: bool = False,
    timeout: float = 60.0,
    on_file: Callable[[DataFile], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> list[FetchRecord]:
    """Download the registered files of ``datasets`` into ``data_dir``.

    Files already present with the right checksum are kept. Every download goes
    to a temporary file beside its target (``.<file name>.<pid>.<random>.tmp``)
    that is renamed into place only after its sha256 has been verified, so an
    interrupted fetch leaves nothing half-written. A fetch that was killed
    outright (``SIGKILL``, a power cut) cannot remove its temporary file; the next
    fetch removes it (only files of exactly that name whose process has ended:
    :func:`ephys2tx.io.remove_stale_temporaries`).

    Parameters
    ----------
    data_dir : path-like
        Destination; created if needed.
    datasets : iterable of str, optional
        Dataset names (see :data:`~ephys2tx.data.registry.DATASET_NAMES`); all by default.
    mirror : str, optional
        Base URL of a copy of the data directory (``MIRROR/<relpath>``), used
        instead of the public addresses.
    force : bool
        Download even if a verified copy is present.
    overwrite : bool
        Replace a file at a registered path whose content differs from the
        published file (without it, such a file is refused before any download:
        it may be the user's own edit).
    timeout : float
        Socket timeout in seconds; a download that, after this time, has averaged
        under :data:`MIN_BYTES_PER_SECOND` is stopped as well.
    on_file, on_bytes : callable, optional
        Progress callbacks (file started; bytes received).

    Returns
    -------
    list of FetchRecord
    """
    names = list(DATASET_FILES) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in DATASET_FILES]
    if unknown:
        raise InputError(
            f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASET_FILES)}."
        )
    try:
        scheme = None if mirror is None else urllib.parse.urlsplit(mirror).scheme
    except ValueError:  # e.g. an unclosed [IPv6 address
        scheme = ""
    if mirror is not None and scheme not in ("http", "https", "file"):
        raise InputError(f"--mirror {mirror!r} is not an http(s):// or file:// address; give the "
                         "base URL of a copy of the data folder, e.g. https://host/ephys2tx-data.")
    root = Path(data_dir)
    specs = [spec for name in names for spec in DATASET_FILES[name].values()]
    present = _check_targets(root, specs, overwrite=overwrite)
    for spec in specs:  # the temporary files of a fetch that was killed
        remove_stale_temporaries((root / spec.relpath).parent, target=Path(spec.relpath).name)
    # Folders that do not exist yet (the data directory's own parents too, e.g. the user cache
    # folder): removed again if they are still empty when a download fails.
    created = sorted({p for name in names for spec in DATASET_FILES[name].values()
                      for p in (root / spec.relpath).parents if not p.exists()},
                     key=lambda p: -len(p.parts))
    try:
        return _fetch_files(root, names, present, mirror, force, timeout, on_file, on_bytes)
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only if empty: verified files already downloaded are kept
            except OSError:
                pass
        raise


def _fetch_files(root, names, present, mirror, force, timeout, on_file, on_bytes) -> list[FetchRecord]:
    records: list[FetchRecord] = []
    for name in names:
        for spec in DATASET_FILES[name].values():
            target = root / spec.relpath
            url = spec.url if mirror is None else mirror.rstrip("/") + "/" + spec.relpath
            if on_file is not None:
                on_file(spec)
            if spec.relpath in present and not force:
                records.append(FetchRecord(spec.relpath, url, "present", spec.sha256,
                                           target.stat().st_size))
                continue
            n_bytes = _download(url, target, spec.sha256, timeout, on_bytes)
            records.append(FetchRecord(spec.relpath, url, "downloaded", spec.sha256, n_bytes))
    return records

"""Fetch against a local HTTP mirror on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from ephys2tx.cli import main
from ephys2tx.data.fetch import fetch_datasets
from ephys2tx.io import sha256_file
from ephys2tx.data.registry import DATASET_FILES
from ephys2tx.errors import InputError

from conftest import copy_data_dir


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        pass


@pytest.fixture
def mirror(data_dir, tmp_path):
    """(base URL, served folder): a local HTTP server over a writable copy of the data."""
    served = copy_data_dir(data_dir, tmp_path / "served")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _leftovers(root):
    return sorted(p.name for p in root.rglob(".*") if p.is_file())  # temporary download files


def test_downloads_verifies_then_reports_present(mirror, tmp_path):
    url, _ = mirror
    dest = tmp_path / "fetched"
    seen_bytes = []
    records = fetch_datasets(dest, ["human", "mouse_visp"], mirror=url, on_bytes=seen_bytes.append)
    specs = [*DATASET_FILES["human"].values(), *DATASET_FILES["mouse_visp"].values()]
    assert [r.relpath for r in records] == [s.relpath for s in specs]
    assert {r.status for r in records} == {"downloaded"}
    for rec, spec in zip(records, specs):
        assert sha256_file(dest / spec.relpath) == spec.sha256
        assert rec.n_bytes == (dest / spec.relpath).stat().st_size
        assert rec.url == f"{url}/{spec.relpath}"
    assert sum(seen_bytes) == sum(r.n_bytes for r in records)
    assert _leftovers(dest) == []

    again = fetch_datasets(dest, ["human", "mouse_visp"], mirror=url)
    assert {r.status for r in again} == {"present"}


def test_force_downloads_again(mirror, tmp_path):
    url, _ = mirror
    dest = tmp_path / "fetched"
    fetch_datasets(dest, ["human"], mirror=url)
    again = fetch_datasets(dest, ["human"], mirror=url, force=True)
    assert {r.status for r in again} == {"downloaded"}


def test_modified_local_file_is_kept_unless_overwrite(mirror, tmp_path):
    url, _ = mirror
    dest = tmp_path / "fetched"
    fetch_datasets(dest, ["human"], mirror=url)
    spec = DATASET_FILES["human"]["donors"]
    (dest / spec.relpath).write_text("my edit\n")
    with pytest.raises(InputError, match="differs from the published file.*--overwrite"):
        fetch_datasets(dest, ["human"], mirror=url)
    assert (dest / spec.relpath).read_text() == "my edit\n"
    records = {r.relpath: r.status for r in fetch_datasets(dest, ["human"], mirror=url,
                                                           overwrite=True)}
    assert records[spec.relpath] == "downloaded"
    assert sha256_file(dest / spec.relpath) == spec.sha256


def test_corrupted_download_raises_and_leaves_nothing(mirror, tmp_path):
    url, served = mirror
    spec = DATASET_FILES["human"]["ephys"]  # first file of the dataset
    path = served / spec.relpath
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch_datasets(dest, ["human"], mirror=url)
    assert not (dest / spec.relpath).exists()
    assert _leftovers(dest) == []


def test_missing_file_on_mirror_raises(mirror, tmp_path):
    url, served = mirror
    spec = DATASET_FILES["human"]["meta"]
    (served / spec.relpath).unlink()
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match="cannot download"):
        fetch_datasets(dest, ["human"], mirror=url)
    assert not (dest / spec.relpath).exists()
    assert _leftovers(dest) == []


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'rat'"):
        fetch_datasets(tmp_path, ["rat"], mirror="http://127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_with_mirror(mirror, tmp_path, capsys):
    url, _ = mirror
    dest = tmp_path / "fetched"
    code = main(["fetch", "--data-dir", str(dest), "--mirror", url, "--dataset", "human"])
    assert code == 0
    for spec in DATASET_FILES["human"].values():
        assert sha256_file(dest / spec.relpath) == spec.sha256
    assert "downloaded" in capsys.readouterr().err


def test_cli_fetch_unknown_dataset(tmp_path, capsys):
    code = main(["fetch", "--data-dir", str(tmp_path / "d"), "--dataset", "rat",
                 "--mirror", "http://127.0.0.1:9"])
    assert code == 2
    assert "unknown dataset" in capsys.readouterr().err


class _FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Serves the data files of ``server.root`` with a fault named by the first path segment."""

    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        pass

    def do_GET(self):  # noqa: N802 (name of the base class's hook)
        mode, _, relpath = self.path.lstrip("/").partition("/")
        if mode in ("404", "500"):
            self.send_error(int(mode))
            return
        if mode in ("html", "page"):  # a login or error page sent with status 200
            body = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if mode == "html" else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode == "empty":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = (self.server.root / relpath).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        stop = self.server.stop
        if mode == "stall":  # headers, then silence
            stop.wait(30)
        elif mode == "trickle":  # a byte every 0.1 s: the socket never times out
            for i in range(len(data)):
                if stop.wait(0.1):
                    break
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
        elif mode == "cut":  # half the body, then the connection closes
            self.wfile.write(data[: len(data) // 2])


@pytest.fixture
def faulty_mirror(data_dir):
    """Base URL of a local server whose downloads stall, trickle or are cut off (see _FaultyHandler)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultyHandler)
    server.daemon_threads = True
    server.root, server.stop = data_dir, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_stalled_download_is_a_user_error_naming_the_url(faulty_mirror, tmp_path):
    # Before: the socket timeout escaped as an OSError that the CLI reported as a problem with
    # the local file's permissions or the disk space.
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match=r"download of http://\S+/stall/\S+ broke off after 0 "
                                         r"bytes \(no data for 0.5 s\)"):
        fetch_datasets(dest, ["human"], mirror=f"{faulty_mirror}/stall", timeout=0.5)
    assert not dest.exists()


def test_a_trickling_download_is_stopped(faulty_mirror, tmp_path):
    # Before: a server sending a byte now and then kept the fetch going for days.
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match=r"download of \S+ is too slow \(\d+ bytes in \d+ s, under 1024"):
        fetch_datasets(dest, ["human"], mirror=f"{faulty_mirror}/trickle", timeout=0.5)
    assert not dest.exists()


def test_a_cut_off_download_says_how_much_arrived(faulty_mirror, data_dir, tmp_path):
    spec = DATASET_FILES["human"]["ephys"]
    size = (data_dir / spec.relpath).stat().st_size
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match=rf"broke off after {size // 2} of {size} bytes"):
        fetch_datasets(dest, ["human"], mirror=f"{faulty_mirror}/cut", timeout=5)
    assert not dest.exists()


def test_a_failed_fetch_removes_the_parent_folders_it_created(faulty_mirror, tmp_path):
    # Before: the folders above the data directory (e.g. <user cache>/ephys2tx of the default
    # data directory) stayed behind, empty.
    dest = tmp_path / "cache" / "ephys2tx" / "data"
    with pytest.raises(InputError, match="broke off"):
        fetch_datasets(dest, ["human"], mirror=f"{faulty_mirror}/cut", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_fetch_leaves_a_temporary_file_that_the_next_fetch_removes(mirror, tmp_path):
    """s8: a fetch SIGKILLed while downloading left `.<name>.<pid>.<hex>.tmp` beside the target
    for ever. The next fetch removes the stale temporaries of its targets, and nothing else."""
    import os
    import signal
    import subprocess
    import sys
    import time

    url, _ = mirror
    dest = tmp_path / "fetched"
    spec = DATASET_FILES["human"]["ephys"]
    folder = (dest / spec.relpath).parent
    # a real process killed in the middle of its write (the stand-in for a slow download)
    script = ("import sys, time\nfrom pathlib import Path\nfrom ephys2tx.io import replace_atomically\n"
              "def write(fh):\n    fh.write(b'partial')\n    fh.flush()\n    print('writing', flush=True)\n"
              "    time.sleep(60)\nreplace_atomically(Path(sys.argv[1]), write)\n")
    folder.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", script, str(dest / spec.relpath)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    stale = _leftovers(dest)
    assert len(stale) == 1 and stale[0].startswith(f".{spec.relpath.rsplit('/', 1)[-1]}.{child.pid}.")
    # files that only look alike are not ours: kept
    alive = folder / f".{spec.relpath.rsplit('/', 1)[-1]}.{os.getpid()}.0123456789ab.tmp"  # a live process
    mine = [folder / ".notes.tmp", folder / f".other.csv.{child.pid}.0123456789ab.tmp",
            folder / f".LeeDalley_ephys_fx.csv.{child.pid}.xyz.tmp", alive]
    for path in mine:
        path.write_text("keep me")
    time.sleep(0.01)
    records = fetch_datasets(dest, ["human"], mirror=url)
    assert {r.status for r in records} == {"downloaded"}
    assert sorted(_leftovers(dest)) == sorted(p.name for p in mine)
    assert all(p.read_text() == "keep me" for p in mine)


@pytest.mark.parametrize("mode, match", [
    ("404", r"cannot download \S+/404/human_gaba_leedalley2023/LeeDalley_ephys_fx\.csv: the server answered HTTP 404 "
            r"Not Found; the file is not at that address: check --mirror"),
    ("500", r"the server answered HTTP 500 Internal Server Error; the server refused or failed the request: run the "
            r"command again later, or pass --mirror"),
    ("html", r"checksum mismatch for \S+ \(\d+ bytes\): .*: the server sent a web page \(text/html: an error or login "
             r"page\?\), not the data file; check that --mirror is the base URL"),
    ("page", r"the server sent a web page"),  # an HTML body declared as text/plain
    ("empty", r"checksum mismatch for \S+ \(0 bytes\): .*: the server sent an empty file, not the data file"),
])
def test_a_server_answering_an_error_or_a_web_page_is_named(mode, match, faulty_mirror, tmp_path):
    # Before: 'HTTP Error 404: Not Found. Check the network' and, for a web page or an empty body,
    # 'checksum mismatch ... The source changed or the download was corrupted'.
    dest = tmp_path / "fetched"
    with pytest.raises(InputError, match=match):
        fetch_datasets(dest, ["human"], mirror=f"{faulty_mirror}/{mode}", timeout=5)
    assert not dest.exists()

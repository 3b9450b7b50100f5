"""``fetch --dandiset``: finding and downloading cells' NWB files, against a mocked DANDI client."""

import hashlib
import sys
import types

import pytest

from ephys2tx.errors import InputError
from ephys2tx.features.nwb.dandi import fetch_dandi_cells, parse_cell_ids


class FakeAsset:
    def __init__(self, path, data, digest=True):
        self.path, self.size, self._data = path, len(data), data
        self._digest = hashlib.sha256(data).hexdigest() if digest is True else digest

    def get_download_file_iter(self, chunk_size=1 << 20):
        return lambda offset=0: iter([self._data[:7], self._data[7:]])

    def get_raw_digest(self, digest_type=None):
        if self._digest is None:
            raise RuntimeError("No dandi:sha2-256 digest found in metadata")
        return self._digest


class FakeClient:
    def __init__(self, assets):
        self.assets, self.calls, self.closed = assets, [], False

    def get_dandiset(self, dandiset_id, version_id=None):
        self.calls.append((dandiset_id, version_id))
        if dandiset_id == "999999":
            raise RuntimeError("No such Dandiset: '999999'")
        return types.SimpleNamespace(get_assets=lambda: iter(self.assets))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True


ASSETS = [
    # 601506507 is a cell specimen id of ipfx's mouse manifest, filed under its session id
    FakeAsset("sub-599387254/sub-599387254_ses-601506492_icephys.nwb", b"cell 601506507 data"),
    FakeAsset("sub-1/sub-1_ses-700000001_icephys.nwb", b"session 700000001"),
    FakeAsset("sub-1/sub-1_ses-7000000012_icephys.nwb", b"a longer id that must not match"),
    FakeAsset("sub-2/sub-2_ses-800_icephys.nwb", b"one"),
    FakeAsset("sub-3/sub-3_ses-800_icephys.nwb", b"two"),
    FakeAsset("sub-4/sub-4_ses-900_icephys.nwb", b"corrupted in transit", digest="0" * 64),
    FakeAsset("sub-5/sub-5_ses-901_icephys.nwb", b"no digest on the archive", digest=None),
]


def test_fetch_finds_names_and_resumes(tmp_path):
    client = FakeClient(ASSETS)
    ids = ["601506507, 700000001", "800 900", "901", "123", "700000001"]
    results = {r.cell_id: r for r in fetch_dandi_cells("000020", ids, tmp_path / "nwb", client=client)}
    assert list(results) == ["601506507", "700000001", "800", "900", "901", "123"]
    assert client.calls == [("000020", None)]
    assert (tmp_path / "nwb" / "601506507.nwb").read_bytes() == b"cell 601506507 data"
    assert (tmp_path / "nwb" / "700000001.nwb").read_bytes() == b"session 700000001"
    assert results["601506507"].asset_path.endswith("ses-601506492_icephys.nwb")
    assert results["901"].status == "downloaded"
    assert "2 assets" in results["800"].reason and "no asset" in results["123"].reason
    assert results["900"].status == "failed" and "checksum" in results["900"].reason
    assert sorted(p.name for p in (tmp_path / "nwb").iterdir()) == ["601506507.nwb", "700000001.nwb", "901.nwb"]

    again = fetch_dandi_cells("000020", ["601506507"], tmp_path / "nwb", version="0.210812.1448", client=client)
    assert again[0].status == "present" and client.calls[-1] == ("000020", "0.210812.1448")


def test_fetch_input_errors(tmp_path):
    with pytest.raises(InputError, match="six digits"):
        fetch_dandi_cells("20", ["1"], tmp_path, client=FakeClient([]))
    with pytest.raises(InputError, match="no cell id"):
        parse_cell_ids([" , "])
    with pytest.raises(InputError, match="cannot list the assets of dandiset 999999"):
        fetch_dandi_cells("999999", ["1"], tmp_path, client=FakeClient([]))


def test_fetch_command_with_default_client(tmp_path, monkeypatch, capsys):
    from ephys2tx.cli_commands.extract import fetch_dandi

    clients = []

    def make_client():
        clients.append(FakeClient(ASSETS))
        return clients[-1]

    module = types.ModuleType("dandi.dandiapi")
    module.DandiAPIClient = make_client
    monkeypatch.setitem(sys.modules, "dandi", types.ModuleType("dandi"))
    monkeypatch.setitem(sys.modules, "dandi.dandiapi", module)
    fetch_dandi("000020", ["601506507"], tmp_path)
    assert clients[0].closed and (tmp_path / "601506507.nwb").is_file()
    assert "1 of 1 cells" in capsys.readouterr().out
    from ephys2tx.cli import main

    code = main(["fetch", "--dandiset", "000020", "--cells", "601506507,123", "--nwb-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2  # a cell could not be fetched: one error line, exit 2, the other file kept
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "1 of 2 cells could not be fetched" in err_lines[0], err_lines
    assert "123" in err_lines[0] and "Traceback" not in captured.err + captured.out
    assert "present" in captured.out and "no asset" in captured.out
    assert (tmp_path / "601506507.nwb").is_file()


def test_fetch_leaves_no_folder_on_error_and_keeps_files_it_did_not_write(tmp_path):
    """An unlistable dandiset left an empty --nwb-dir behind; an id with '..' named a file outside
    it; a file <id>.nwb of another size was replaced by the download."""
    with pytest.raises(InputError, match="cannot list the assets of dandiset 999999"):
        fetch_dandi_cells("999999", ["1"], tmp_path / "nwb", client=FakeClient([]))
    assert not (tmp_path / "nwb").exists()
    with pytest.raises(InputError, match=r"--cells '\.\./\.\./evil' is not a cell id"):
        fetch_dandi_cells("000020", ["../../evil"], tmp_path / "nwb", client=FakeClient(ASSETS))
    with pytest.raises(InputError, match=r"--cells 'a\\\\b' is not a cell id"):
        parse_cell_ids(["a\\b"])
    (tmp_path / "nwb").mkdir()
    mine = tmp_path / "nwb" / "700000001.nwb"
    mine.write_bytes(b"my own recording")
    (result,) = fetch_dandi_cells("000020", ["700000001"], tmp_path / "nwb", client=FakeClient(ASSETS))
    assert result.status == "failed" and "exists and differs from sub-1/sub-1_ses-700000001_icephys.nwb" \
        in result.reason and "move it away, or choose another --nwb-dir" in result.reason
    assert mine.read_bytes() == b"my own recording"
    with pytest.raises(InputError, match=r"--nwb-dir .*700000001\.nwb is a file, not a folder"):
        fetch_dandi_cells("000020", ["1"], mine, client=FakeClient(ASSETS))

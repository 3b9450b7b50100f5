"""Axon ABF 1/2 files: protocol maps, the epoch-table stimulus, NWB twins, and the route to `ephys2tx map`."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ephys2tx.cli import main
from ephys2tx.errors import InputError
from ephys2tx.features.nwb import SUMMARY_FEATURES, extract_features, read_feature_table
from ephys2tx.features.nwb.abf import extract_abf_cell, load_protocol_map, validate_protocol_map
from ephys2tx.features.nwb.adapter import CellFailure
from ephys2tx.features.nwb.vectors import FAMILIES, extract_cell
from ephys2tx.testing import abf_fixtures as af


@pytest.fixture(scope="session")
def abf_cells():
    """Two simulated cells (fast-spiking, adapting), each with a test pulse, plus an adapting one without."""
    with_pulse = af.simulate_abf_cells(["Pvalb", "Sst"], seed=1)
    without = af.simulate_abf_cells(["Pvalb", "Sst"], seed=1, test_pulse=False)  # the same two cells
    return with_pulse, without


@pytest.fixture(scope="session")
def abf_root(abf_cells, tmp_path_factory):
    """Both cells as ABF 1 and ABF 2 folders (three protocols each), their NWB twins, and LS-only files."""
    root = tmp_path_factory.mktemp("abf")
    cells, _ = abf_cells
    out = {"twins": {}, "v1": [], "v2": [], "files": []}
    for cell in cells:
        out["twins"][cell.cell_id] = af.write_nwb_twin(root / f"{cell.cell_id}.nwb", cell)
        for version in (1, 2):
            out[f"v{version}"].append(af.write_abf_cell(root / f"abf{version}", cell, version=version))
        out["files"].append(af.write_abf_cell(root / "ls_only", cell, version=1, layout="file"))
    (root / "map.yaml").write_text(json.dumps({**af.PROTOCOL_MAP, "cells": "folder"}))
    (root / "map_files.yaml").write_text(json.dumps(af.PROTOCOL_MAP))
    out["root"] = root
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_written_files_read_back_with_pyabf(abf_cells, tmp_path, version):
    """The writers store the epoch table pyabf rebuilds into exactly the simulated commands."""
    import pyabf

    cell = abf_cells[0][0]
    folder = af.write_abf_cell(tmp_path, cell, version=version)
    for run in cell.runs.values():
        abf = pyabf.ABF(str(folder / f"{run.protocol}.abf"))
        assert abf.abfVersion["major"] == version and abf.protocol == run.protocol
        assert abf.sweepCount == run.n_sweeps and abf.dataRate == cell.rate and abf.adcUnits[0] == "mV"
        for k in range(run.n_sweeps):
            abf.setSweep(k)
            np.testing.assert_array_equal(abf.sweepC, run.commands[k])
            np.testing.assert_array_equal(abf.sweepY, run.voltages[k])


def _assert_same_features(got, ref, rtol=1e-6):
    for name in SUMMARY_FEATURES:
        a, b = got["summary"][name], ref["summary"][name]
        assert np.isnan(a) == np.isnan(b), name
        if not np.isnan(b):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-9, err_msg=name)
    for name in FAMILIES:
        np.testing.assert_array_equal(np.isnan(got["vectors"][name]), np.isnan(ref["vectors"][name]), err_msg=name)
        np.testing.assert_allclose(got["vectors"][name], ref["vectors"][name], rtol=rtol, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("version", [1, 2])
def test_abf_cell_equals_its_nwb_twin(abf_root, abf_cells, version):
    """Same sweeps in ABF and NWB -> the same summary features and vectors (to float rounding)."""
    pmap = load_protocol_map(abf_root["root"] / "map.yaml")
    for cell, folder in zip(abf_cells[0], abf_root[f"v{version}"]):
        got = extract_abf_cell(folder, pmap)
        ref = extract_cell(abf_root["twins"][cell.cell_id])
        assert got["layout"] == f"abf{version}" and got["notes"] == []
        assert np.isfinite([got["summary"][k] for k in ("ri", "tau", "vrest", "threshold_v_ramp",
                                                        "threshold_v_short_square")]).all()
        _assert_same_features(got, ref)


HOLDING_PA = -30.0


@pytest.fixture(scope="session")
def held_cell(tmp_path_factory):
    """A fast-spiking cell recorded on a -30 pA DAC holding current (ABF 1 and 2), and its NWB twin without it."""
    cell = af.simulate_abf_cells(["Pvalb"], seed=3, holding=HOLDING_PA)[0]
    root = tmp_path_factory.mktemp("held")
    folders = {version: af.write_abf_cell(root / f"abf{version}", cell, version=version) for version in (1, 2)}
    return cell, folders, af.write_nwb_twin(root / f"{cell.cell_id}.nwb", cell)


@pytest.mark.parametrize("version", [1, 2])
def test_holding_current_is_in_the_files_and_subtracted(held_cell, version):
    """holding_current: subtract -> the same features and vectors as the twin recorded without holding."""
    import pyabf

    cell, folders, twin = held_cell
    run = cell.runs["long_square"]
    abf = pyabf.ABF(str(folders[version] / f"{run.protocol}.abf"))
    assert abf.holdingCommand[0] == HOLDING_PA  # the header carries it; pyabf puts it in every command
    for k in range(run.n_sweeps):
        abf.setSweep(k)
        np.testing.assert_array_equal(abf.sweepC, run.commands[k])
        assert abf.sweepC[0] == HOLDING_PA and abf.sweepC[-1] == HOLDING_PA
    pmap = validate_protocol_map({**af.PROTOCOL_MAP, "cells": "folder"})
    assert pmap["holding_current"] == "subtract"  # the default
    got = extract_abf_cell(folders[version], pmap)
    assert got["notes"] == ["holding current -30 pA subtracted from the stimulus (holding_current: subtract)"]
    ref = extract_cell(twin)
    assert np.isfinite([got["summary"][k] for k in ("ri", "tau", "vrest", "threshold_i_long_square",
                                                    "threshold_i_ramp", "threshold_i_short_square")]).all()
    _assert_same_features(got, ref)


def test_holding_current_included_shifts_the_amplitudes(held_cell):
    """holding_current: include -> ipfx's absolute command levels: every stimulus amplitude moves by the holding."""
    cell, folders, _ = held_cell
    base = {**af.PROTOCOL_MAP, "cells": "folder"}
    subtracted = extract_abf_cell(folders[2], validate_protocol_map(base))
    included = extract_abf_cell(folders[2], validate_protocol_map({**base, "holding_current": "include"}))
    assert included["notes"] == ["holding current -30 pA kept in the stimulus amplitudes (holding_current: include)"]
    for name in ("threshold_i_long_square", "threshold_i_short_square", "threshold_i_ramp"):
        np.testing.assert_allclose(included["summary"][name] - subtracted["summary"][name], HOLDING_PA,
                                   atol=1e-6, err_msg=name)
    # ipfx's subthreshold selection (steps >= -100 pA) now drops the -90 pA step (-120 pA absolute): Ri moves
    assert not np.isclose(included["summary"]["ri"], subtracted["summary"]["ri"], rtol=0.01)
    # voltage-only features of the rheobase sweep do not depend on the amplitudes
    np.testing.assert_allclose(included["summary"]["threshold_v_long_square"],
                               subtracted["summary"]["threshold_v_long_square"], rtol=1e-9)


def test_long_square_only_file_goes_on_without_ramp_and_short_square(abf_root, abf_cells):
    pmap = load_protocol_map(abf_root["root"] / "map_files.yaml")
    cell = abf_cells[0][1]
    got = extract_abf_cell(abf_root["files"][1], pmap)
    ref = extract_cell(abf_root["twins"][cell.cell_id])
    assert len(got["notes"]) == 2 and "no short square protocol" in got["notes"][0] and "no ramp" in got["notes"][1]
    for name in SUMMARY_FEATURES:  # long-square features as with every protocol; the others NaN
        if name.endswith(("_ramp", "_short_square")):
            assert np.isnan(got["summary"][name]), name
        elif not np.isnan(ref["summary"][name]):
            np.testing.assert_allclose(got["summary"][name], ref["summary"][name], rtol=1e-6, err_msg=name)
    n = 150  # the short-square and ramp thirds of the AP waveforms are NaN (not zeros)
    assert np.isnan(got["vectors"]["first_ap_v"][:n]).all() and np.isnan(got["vectors"]["first_ap_v"][-n:]).all()
    np.testing.assert_allclose(got["vectors"]["first_ap_v"][n:2 * n], ref["vectors"]["first_ap_v"][n:2 * n],
                               rtol=1e-6)
    for name in ("inst_freq", "psth", "subthresh_norm", "step_subthresh", "spiking_width"):
        np.testing.assert_allclose(got["vectors"][name], ref["vectors"][name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_protocol_without_test_pulse(abf_cells, tmp_path):
    """Clampex protocols often have no test pulse: the stimulus window is still found from the command."""
    with_pulse, without = abf_cells[0][1], abf_cells[1][1]
    pmap = validate_protocol_map({**af.PROTOCOL_MAP, "cells": "folder"})
    a = extract_abf_cell(af.write_abf_cell(tmp_path / "a", with_pulse), pmap)
    b = extract_abf_cell(af.write_abf_cell(tmp_path / "b", without), pmap)
    assert a["summary"]["threshold_i_long_square"] == b["summary"]["threshold_i_long_square"]  # same rheobase
    assert a["summary"]["threshold_i_short_square"] == b["summary"]["threshold_i_short_square"]
    for name in ("ri", "tau", "vrest", "sag", "threshold_v_long_square", "threshold_v_ramp"):
        np.testing.assert_allclose(b["summary"][name], a["summary"][name], rtol=0.03, err_msg=name)


def test_extract_cli_on_abf_folders_then_map(abf_root, data_dir, tmp_path, capsys):
    """ABF folder -> `ephys2tx extract` -> `ephys2tx map --column-map ipfx_record`: the README's two commands."""
    out = tmp_path / "abf.parquet"
    code = main(["extract", str(abf_root["root"] / "abf2"), "--protocol-map", str(abf_root["root"] / "map.yaml"),
                 "-o", str(out), "-j", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = read_feature_table(out)
    assert sorted(table.frame.index) == sorted(p.name for p in abf_root["v2"])
    assert table.summary_columns == ["summary__" + k for k in SUMMARY_FEATURES]
    mapping = tmp_path / "mapping"
    code = main(["map", "--input", str(out), "--species", "mouse", "--column-map", "ipfx_record",
                 "--out", str(mapping), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "ref")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    predictions = pd.read_csv(mapping / "predictions.csv")
    assert len(predictions) == 2 and predictions["predicted_subclass"].notna().all()
    assert (predictions["n_features"] >= 15).all()


def test_extract_cli_file_mode_notes_and_unlisted_protocol(abf_root, tmp_path, capsys):
    """cells: file -> one cell per ABF; what is missing is said plainly; unlisted protocols fail the cell."""
    inputs = [str(p) for p in abf_root["files"]] + [str(abf_root["v1"][0] / f"{af.RAMP_PROTOCOL}.abf")]
    out = tmp_path / "f.parquet"
    assert main(["extract", *inputs, "--protocol-map", str(abf_root["root"] / "map_files.yaml"), "-o", str(out),
                 "-j", "1"]) == 0
    captured = capsys.readouterr()
    assert "note: 2 cell(s)" in captured.out and "no ramp protocol" in captured.out
    failures = pd.read_csv(f"{out}.failures.csv")
    assert list(failures["cell_id"]) == [af.RAMP_PROTOCOL] and "no long-square series" in failures["reason"][0]
    notes = read_feature_table(out).frame
    assert notes["summary__threshold_v_ramp"].isna().all() and notes["summary__ri"].notna().all()


def test_abf_failures(tmp_path):
    pmap = validate_protocol_map(af.PROTOCOL_MAP)
    junk = tmp_path / "junk.abf"
    junk.write_bytes(b"not an abf file at all")
    with pytest.raises(CellFailure, match="cannot read ABF file junk.abf"):
        extract_abf_cell(junk, pmap)
    with pytest.raises(CellFailure, match="not found"):
        extract_abf_cell(tmp_path / "missing.abf", pmap)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellFailure, match="no .abf file"):
        extract_abf_cell(tmp_path / "empty", pmap)


def test_abf_needs_a_protocol_map(abf_root, tmp_path):
    with pytest.raises(InputError, match="--protocol-map"):
        extract_features([abf_root["files"][0]], tmp_path / "f.parquet")
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "f.parquet.cache").exists()


BAD_MAPS = {
    "not a mapping": ("- a\n- b\n", "must be a YAML mapping"),
    "unknown key": ("long_square: x\nliquid_junction_potential_mv: 0\nljp: 3\n", r"unknown key\(s\) \['ljp'\]"),
    "no long square": ("liquid_junction_potential_mv: 0\n", "long_square is required"),
    "no ljp": ("long_square: IV\n", "liquid_junction_potential_mv is required"),
    "ljp not a number": ("long_square: IV\nliquid_junction_potential_mv: ten\n", "must be a number"),
    "ljp out of range": ("long_square: IV\nliquid_junction_potential_mv: 130\n", "between -30 and 30"),
    # fault hunt 7 (notes/s7/faults1.md)
    "ljp too negative": ("long_square: IV\nliquid_junction_potential_mv: -31\n", "between -30 and 30.*sign flipped"),
    "ljp huge integer": ("long_square: IV\nliquid_junction_potential_mv: " + "9" * 400 + "\n",
                         r"between -30 and 30, got 9+\.\.\.9+"),
    "ljp infinite": ("long_square: IV\nliquid_junction_potential_mv: 1e999\n", "between -30 and 30, got inf"),
    "ljp text": ("long_square: IV\nliquid_junction_potential_mv: 'thirteen'\n", "must be a number of mV.*got 'thirteen'"),
    "repeated key": ("long_square: IV\nliquid_junction_potential_mv: 13\nliquid_junction_potential_mv: 0\n",
                     r"map\.yaml, line 3: the protocol map repeats the key 'liquid_junction_potential_mv' "
                     r"\(first on line 2\)"),
    "anchor and alias": ("ls: &ls [IV]\nlong_square: *ls\nliquid_junction_potential_mv: 0\n",
                         "line 1: the protocol map uses a YAML anchor and alias"),
    "name a list": ("long_square: IV\nliquid_junction_potential_mv: 0\nname: [rig]\n", "name must be text"),
    "channel huge": ("long_square: IV\nliquid_junction_potential_mv: 0\nchannel: " + "9" * 40 + "\n",
                     r"ADC channel number \(0, 1, \.\.\. 15\)"),
    "tab indentation": ("long_square: IV\n\tliquid_junction_potential_mv: 0\n",
                        r"line 2, column 1: .*indents with spaces, not tabs"),
    "empty file": ("# nothing here\n", "protocol map .*map\\.yaml is empty"),
    "ljp boolean": ("long_square: IV\nliquid_junction_potential_mv: true\n", "must be a number"),
    "role not strings": ("long_square: [1, 2]\nliquid_junction_potential_mv: 0\n", "list of protocol names"),
    "two roles": ("long_square: IV\nramp: iv\nliquid_junction_potential_mv: 0\n", "both long_square and ramp"),
    "bad channel": ("long_square: IV\nliquid_junction_potential_mv: 0\nchannel: -1\n", "ADC channel number"),
    "holding not a mode": ("long_square: IV\nliquid_junction_potential_mv: 0\nholding_current: add\n",
                           "holding_current must be 'subtract'"),
    "holding boolean": ("long_square: IV\nliquid_junction_potential_mv: 0\nholding_current: yes\n",
                        "holding_current must be 'subtract'"),
    "bad cells": ("long_square: IV\nliquid_junction_potential_mv: 0\ncells: sweep\n", "'file'"),
    "python tag": ("long_square: !!python/object/apply:os.system ['touch pwned']\n"
                   "liquid_junction_potential_mv: 0\n", r"not valid YAML, line 1, column 14: .*tag.*python"),
    "broken yaml": ("long_square: [IV\n", "not valid YAML, line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_bad_protocol_map_is_one_line_exit_2(case, abf_root, tmp_path, capsys, monkeypatch):
    text, pattern = BAD_MAPS[case]
    path = tmp_path / "map.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=pattern):
        load_protocol_map(path)
    out = tmp_path / "f.parquet"
    assert main(["extract", str(abf_root["files"][0]), "--protocol-map", str(path), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in captured.err
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_protocol_map_file_problems(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_protocol_map(tmp_path / "nope.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("long_square: Strom\xe4nderung\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_protocol_map(latin)
    with pytest.raises(InputError, match="is a directory"):
        load_protocol_map(tmp_path)
    ok = validate_protocol_map({"long_square": "IV*", "liquid_junction_potential_mv": 13})
    assert ok["long_square"] == ["IV*"] and ok["ramp"] == [] and ok["cells"] == "file" and ok["channel"] is None
    assert ok["holding_current"] == "subtract"


def test_a_long_square_name_no_file_has_is_refused_naming_the_protocols_present(abf_root, tmp_path, capsys):
    """The map's long_square matches no ABF file: one error listing the files' protocols, before any
    cell is extracted (it used to be one "no long-square series" failure per cell)."""
    path = tmp_path / "map.yaml"
    path.write_text("long_square: IV_steps\nliquid_junction_potential_mv: 13\n")
    out = tmp_path / "f.parquet"
    code = main(["extract", *map(str, abf_root["files"]), "--protocol-map", str(path), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert re.search(rf"protocol map .*map\.yaml: long_square \['IV_steps'\] matches the protocol of none of "
                     rf"the 2 readable ABF file\(s\); their protocols are '{af.LONG_SQUARE_PROTOCOL}' \(2 files\)",
                     lines[0]), lines[0]
    assert not out.exists() and not out.with_name(out.name + ".cache").exists()
    with pytest.raises(InputError, match=r"^protocol map: long_square \['IV_steps'\]"):
        extract_features(abf_root["files"], tmp_path / "g.parquet",
                         protocol_map={"long_square": "IV_steps", "liquid_junction_potential_mv": 0})


def test_a_protocol_name_with_glob_characters_matches_itself():
    from ephys2tx.features.nwb.abf import _role_of

    pmap = validate_protocol_map({"long_square": "IV [1 s]", "ramp": "ramp*",
                                  "liquid_junction_potential_mv": 0})
    assert _role_of("IV [1 s]", pmap) == "long_square" and _role_of(" iv [1 s] ", pmap) == "long_square"
    assert _role_of("Ramp_25pA", pmap) == "ramp" and _role_of("IV 2", pmap) is None


def test_a_name_written_out_wins_over_a_pattern_and_two_patterns_are_refused(abf_root, tmp_path, capsys):
    """``long_square: "IC_*"`` used to take the ramp and short-square files as long squares too
    (then ipfx failed on the cell); a name written out under another role now wins, and a
    protocol two roles' patterns match is refused before any work."""
    from ephys2tx.features.nwb.abf import _role_of

    pmap = validate_protocol_map({"long_square": "IC_*", "ramp": af.RAMP_PROTOCOL,
                                  "short_square": [af.SHORT_SQUARE_PROTOCOL], "liquid_junction_potential_mv": 0})
    assert [_role_of(p, pmap) for p in (af.LONG_SQUARE_PROTOCOL, af.RAMP_PROTOCOL, af.SHORT_SQUARE_PROTOCOL)] \
        == ["long_square", "ramp", "short_square"]
    ambiguous = validate_protocol_map({"long_square": "IC_*", "ramp": "*ramp", "liquid_junction_potential_mv": 0})
    with pytest.raises(CellFailure, match="matches the patterns of both long_square and ramp"):
        _role_of(af.RAMP_PROTOCOL, ambiguous)
    path = tmp_path / "map.yaml"
    path.write_text("long_square: 'IC_*'\nramp: '*ramp'\nliquid_junction_potential_mv: 0\ncells: folder\n")
    out = tmp_path / "f.parquet"
    code = main(["extract", *map(str, abf_root["v2"]), "--protocol-map", str(path), "-o", str(out)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, lines
    assert re.search(rf"protocol map .*map\.yaml: the protocol '{af.RAMP_PROTOCOL}' of 2 ABF file\(s\) matches the "
                     r"patterns of both long_square \['IC_\*'\] and ramp \['\*ramp'\]; write its name out", lines[0])
    assert not out.exists()


def test_a_quoted_junction_potential_is_read_as_a_number(tmp_path):
    from ephys2tx.features.nwb.abf import load_protocol_map

    path = tmp_path / "protocols.yaml"
    path.write_text("long_square: IV\nliquid_junction_potential_mv: '-13'\n", encoding="utf-8")
    assert load_protocol_map(path)["liquid_junction_potential_mv"] == -13.0


def test_protocol_map_with_yaml_aliases_is_refused(tmp_path):
    """The protocol map is a user's YAML file too: aliases (the 'billion laughs') are refused."""
    path = tmp_path / "map.yaml"
    path.write_text("long_square: &p LS\nshort_square: *p\nliquid_junction_potential_mv: 0\n")
    with pytest.raises(InputError, match=r"map\.yaml.*YAML anchor"):
        load_protocol_map(path)


def _patched(path, offset, fmt, *values):
    import struct

    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


def _write_two_channels(path, run, rate):
    """ABF 1 with the command current on IN 0 (pA) and the voltage on IN 1 (mV), samples interleaved;
    the one DAC (0) carries the epoch table, as a MultiClamp channel recorded with Im and Vm."""
    import struct

    af.write_abf1(path, run, rate)
    header = bytearray(path.read_bytes()[:12 * 512])
    struct.pack_into("h", header, 120, 2)  # nADCNumChannels
    struct.pack_into("f", header, 122, 1e6 / rate / 2)  # sample interval over both channels
    struct.pack_into("i", header, 10, run.n_samples * run.n_sweeps * 2)
    struct.pack_into("i", header, 138, run.n_samples * 2)
    struct.pack_into("16h", header, 410, *([0, 1] + [0] * 14))  # nADCSamplingSeq
    struct.pack_into("8s", header, 602, b"pA".ljust(8))
    struct.pack_into("8s", header, 610, b"mV".ljust(8))
    samples = [np.column_stack([np.round(c).astype(np.int16), raw]).ravel() for c, raw in zip(run.commands, run.raw)]
    path.write_bytes(bytes(header) + af._pad(np.concatenate(samples).astype("<i2").tobytes()))
    return path


def _constant_sweep(run, value):
    import dataclasses

    raw = list(run.raw)
    raw[-2] = np.full_like(raw[-2], value)
    return dataclasses.replace(run, raw=raw)


ABF_FAULTS = {
    # (writer(path, run, rate), expected reason): each was accepted with wrong features or failed
    # with an ipfx message about something else before
    "gap_free": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 8, "h", 3),
                 r"gap_free\.abf: gap-free recording, not episodic stimulation"),
    "no_waveform": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 2296, "2h", 0, 0),
                    r"the command \(DAC 0\) is constant on all \d+ sweep\(s\) \(DAC waveform is not enabled\)"),
    "empty_epoch_table": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 2308, "10h", *[0] * 10),
                          r"constant on all \d+ sweep\(s\) \(its epoch table has no step or ramp epoch\)"),
    "command_declared_nA": (lambda p, run, rate: af.write_abf1(p, run, rate, dac_unit="nA"),
                            r"the stimulus reaches \d+ pA \(beyond 100000 pA\): the unit or conversion"),
    "voltage_declared_V": (lambda p, run, rate: af.write_abf1(p, run, rate, adc_unit="V"),
                           r"sweep 0 \(C1LSCOARSE150216\): the voltage reaches \d+(\.\d+)? mV \(beyond 1000 mV\)"),
    "constant_sweep": (lambda p, run, rate: af.write_abf1(p, _constant_sweep(run, -700), rate),
                       r"the voltage is exactly -2\.13623 mV on every sample: no signal"),
    "saturated_sweep": (lambda p, run, rate: af.write_abf1(p, _constant_sweep(run, 32767), rate),
                        r"the voltage is exactly 99\.9969 mV on every sample"),
    # s8 (extract hunt): a corrupt or cut header. pyabf sizes its lists by the header's counts: a
    # sweep count of 335 million took all the memory (the process was killed), also in the main
    # process, which reads every header for the protocol names; smaller ones gave pyabf's messages
    "header_sweep_count_corrupt": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 16, "<i", 5_000_000),
                                   r"cannot read ABF file header_sweep_count_corrupt\.abf: the header is corrupt "
                                   r"\(5000000 sweeps for \d+ samples\); copy the file again from the rig"),
    "header_negative_count": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 10, "<i", -7),
                              r"the header is corrupt \(a negative count or position\)"),
    "abf1_data_cut": (lambda p, run, rate: _cut(af.write_abf1(p, run, rate)),
                      r"abf1_data_cut\.abf: the header places the data up to byte \d+, but the file has \d+ bytes: a "
                      r"truncated copy"),
    "abf2_data_cut": (lambda p, run, rate: _cut(af.write_abf2(p, run, rate)),
                      r"abf2_data_cut\.abf: the header places the data up to byte \d+, but the file has \d+ bytes"),
    "abf2_data_count_corrupt": (lambda p, run, rate: _patched(af.write_abf2(p, run, rate), 236 + 8, "<i", 2**30),
                                r"the header places the data up to byte \d+, but the file has \d+ bytes"),
    "not_abf": (lambda p, run, rate: p.write_bytes(b"Clampfit results\n" * 10) and p,
                r"not an Axon ABF file \(it begins with b'Clam', not 'ABF ' or 'ABF2'\)"),
    "empty_file": (lambda p, run, rate: p.write_bytes(b"") or p, r"empty file \(0 bytes\): an interrupted download or copy; copy it again"),
    # s9: a header sweep count of 0 (pyabf then reads all the data as one sweep): was ipfx's 'No spiking
    # long square sweeps, cannot compute cell features'
    "abf1_zero_sweeps": (lambda p, run, rate: _patched(af.write_abf1(p, run, rate), 16, "<i", 0),
                         r"abf1_zero_sweeps\.abf: the header records 0 sweeps: the recording was stopped before"),
    "abf2_zero_sweeps": (lambda p, run, rate: _patched(af.write_abf2(p, run, rate), 12, "<I", 0),
                         r"abf2_zero_sweeps\.abf: the header records 0 sweeps"),
}


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", sorted(ABF_FAULTS))
def test_odd_abf_content_fails_the_cell_with_its_reason(case, abf_cells, tmp_path):
    cell = abf_cells[0][0]
    writer, match = ABF_FAULTS[case]
    path = writer(tmp_path / f"{case}.abf", cell.runs["long_square"], cell.rate)
    with pytest.raises(CellFailure, match=match):
        extract_abf_cell(path, validate_protocol_map(af.PROTOCOL_MAP))


def test_voltage_on_the_second_adc_channel_is_stimulated_by_the_one_dac(abf_cells, tmp_path):
    """Current on IN 0, voltage on IN 1, one DAC with the epoch table: the stimulus is DAC 0's (was DAC 1's
    flat command: 'No long square sweeps were long enough'); same features as the one-channel file."""
    cell = abf_cells[0][0]
    run = cell.runs["long_square"]
    pmap = validate_protocol_map(af.PROTOCOL_MAP)
    two = _write_two_channels(tmp_path / "two.abf", run, cell.rate)
    one = af.write_abf1(tmp_path / "one.abf", run, cell.rate)
    ref = extract_abf_cell(one, pmap)
    for channel in (None, 1):  # the first channel in mV, or named in the map
        got = extract_abf_cell(two, validate_protocol_map({**af.PROTOCOL_MAP, "channel": channel}))
        _assert_same_features(got, ref, rtol=0)


CHANNEL_LAYOUTS = [("mV", "pA"), ("pA", "mV"), ("mV", "pA", "pA")]


@pytest.mark.parametrize("units", CHANNEL_LAYOUTS)
def test_multi_channel_abf2_reads_back_exactly_with_pyabf(abf_cells, tmp_path, units):
    """The ABF 2 writer's channels (voltage in mV, current in pA, samples interleaved) are what pyabf reads."""
    import pyabf

    cell = abf_cells[0][0]
    run = cell.runs["long_square"]
    abf = pyabf.ABF(str(af.write_abf2(tmp_path / "multi.abf", run, cell.rate, channels=units)))
    assert abf.adcUnits == list(units) and abf.adcNames == [f"IN {k}" for k in range(len(units))]
    assert abf.sweepCount == run.n_sweeps and abf.dataRate == cell.rate
    for k in range(run.n_sweeps):
        for channel, unit in enumerate(units):
            abf.setSweep(k, channel=channel)
            np.testing.assert_array_equal(abf.sweepY, af.channel_trace(run, k, unit)[1])
        abf.setSweep(k, channel=units.index("mV"))
        np.testing.assert_array_equal(abf.sweepY, run.voltages[k])
        abf.setSweep(k, channel=0)  # DAC 0 carries the epoch table
        np.testing.assert_array_equal(abf.sweepC, run.commands[k])


@pytest.mark.parametrize("units", CHANNEL_LAYOUTS)
def test_multi_channel_abf2_cell_equals_its_nwb_twin(abf_root, abf_cells, tmp_path, units):
    """The voltage channel is found by its unit (mV), first or second: the same features as the NWB twin."""
    cell = abf_cells[0][0]
    folder = tmp_path / cell.cell_id
    folder.mkdir()
    for run in cell.runs.values():
        af.write_abf2(folder / f"{run.protocol}.abf", run, cell.rate, channels=units)
    got = extract_abf_cell(folder, validate_protocol_map({**af.PROTOCOL_MAP, "cells": "folder"}))
    assert got["notes"] == []
    _assert_same_features(got, extract_cell(abf_root["twins"][cell.cell_id]))


@pytest.mark.parametrize("units, channel, match", [
    (("mV", "mV"), None, r"two\.abf: 2 ADC channels are in mV \(0 \(IN 0, mV\), 1 \(IN 1, mV\)\): cannot tell "
                         r"which one is the membrane potential; add 'channel: 0' \(or the right number\) to the "
                         r"protocol map"),
    (("pA", "pA"), None, r"two\.abf: no ADC channel in mV \(channels: 0 \(IN 0, pA\), 1 \(IN 1, pA\)\)"),
    (("mV", "pA"), 1, r"two\.abf: ADC channel 1 is in 'pA', not mV: .*\(channels: 0 \(IN 0, mV\), 1 \(IN 1, pA\)\); "
                      r"set channel in the protocol map"),
    (("mV", "pA"), 2, r"two\.abf: channel 2 asked by the protocol map, but the file has 2 ADC channel\(s\): "
                      r"0 \(IN 0, mV\), 1 \(IN 1, pA\)"),
])
def test_voltage_channel_that_cannot_be_told_fails_the_cell_naming_the_channels(abf_cells, tmp_path, units,
                                                                                channel, match):
    """Two channels in mV (was: the first taken silently), none, or a wrong `channel`: the cell fails naming
    the file, each channel with its unit, and the protocol-map key that chooses."""
    cell = abf_cells[0][0]
    path = af.write_abf2(tmp_path / "two.abf", cell.runs["long_square"], cell.rate, channels=units)
    with pytest.raises(CellFailure, match=match):
        extract_abf_cell(path, validate_protocol_map({**af.PROTOCOL_MAP, "channel": channel}))


def test_two_channels_in_mv_with_channel_set_are_extracted(abf_cells, tmp_path):
    cell = abf_cells[0][0]
    run = cell.runs["long_square"]
    two = af.write_abf2(tmp_path / "two.abf", run, cell.rate, channels=("mV", "mV"))
    ref = extract_abf_cell(af.write_abf2(tmp_path / "one.abf", run, cell.rate), validate_protocol_map(af.PROTOCOL_MAP))
    for channel in (0, 1):
        got = extract_abf_cell(two, validate_protocol_map({**af.PROTOCOL_MAP, "channel": channel}))
        _assert_same_features(got, ref, rtol=0)


def test_protocol_names_are_not_read_from_an_impossible_header(abf_cells, tmp_path, monkeypatch):
    """The main process reads every ABF header (protocol names) before any worker starts: a header
    with an impossible sweep count is left to its cell (pyabf would allocate a list of that many
    sweeps: 335 million took all the memory and the command was killed)."""
    import pyabf

    from ephys2tx.features.nwb.abf import check_protocol_names

    cell = abf_cells[0][0]
    good = af.write_abf1(tmp_path / "good.abf", cell.runs["long_square"], cell.rate)
    bad = _patched(af.write_abf1(tmp_path / "bad.abf", cell.runs["long_square"], cell.rate), 16, "<i", 335_544_340)
    opened, real = [], pyabf.ABF

    def recording(path, *args, **kwargs):
        opened.append(Path(path).name)
        if Path(path).name == "bad.abf":
            raise MemoryError  # what pyabf's list(range(335544340)) gives under a memory limit
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pyabf, "ABF", recording)
    check_protocol_names([good, bad], validate_protocol_map(af.PROTOCOL_MAP))
    assert opened == ["good.abf"]
    with pytest.raises(CellFailure, match=r"bad\.abf: the header is corrupt \(335544340 sweeps"):
        extract_abf_cell(bad, validate_protocol_map(af.PROTOCOL_MAP))
    assert opened == ["good.abf"]

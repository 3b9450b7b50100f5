"""Registry of the public Allen Institute Patch-seq files the project reads.

Each file has its path relative to the data directory, its public address and
its sha256. The checksums are the ones published in the shared data README.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One published file: where it lives in the data dir, where to get it, its checksum."""

    relpath: str
    url: str
    sha256: str


_HUMAN_BASE = "https://raw.githubusercontent.com/AllenInstitute/human_patchseq_gaba/main/data/"
_BRIDGE_BASE = "https://raw.githubusercontent.com/AllenInstitute/patchseq_human_L1/main/data/"
_VISP_BASE = "https://raw.githubusercontent.com/smestern/pypatchOTDA/main/patchOTDA/"

#: Files of each dataset, keyed by a short role name.
DATASET_FILES: dict[str, dict[str, DataFile]] = {
    "mouse_visp": {
        "ephys": DataFile(
            "mouse_visp_gouwens2020/VISp_Viewer_ephys.csv",
            _VISP_BASE + "VISp_Viewer_ephys.csv",
            "c7fbac80811b2535f00a7383145b9e1b61b825168cbfc924e0a55f9f7f619503",
        ),
        "meta": DataFile(
            "mouse_visp_gouwens2020/VISp_Viewer_meta.csv",
            _VISP_BASE + "VISp_Viewer_meta.csv",
            "411380cb46131869f378f1a15a90c1ce1b2313c52aa33d5064bcd08bd0173083",
        ),
    },
    "human": {
        "ephys": DataFile(
            "human_gaba_leedalley2023/LeeDalley_ephys_fx.csv",
            _HUMAN_BASE + "LeeDalley_ephys_fx.csv",
            "1ec12b02ba41288d69cdac21d6ac1efa05ff819fd6e052dd48666500e23ced9b",
        ),
        "meta": DataFile(
            "human_gaba_leedalley2023/LeeDalley_manuscript_metadata_v2.csv",
            _HUMAN_BASE + "LeeDalley_manuscript_metadata_v2.csv",
            "c6c72fd87a9fdd67b08ed105f46529383962d05c1617b3fe2220e46e8af14b17",
        ),
        "donors": DataFile(
            "human_gaba_leedalley2023/DataS1_Donor_table.csv",
            _HUMAN_BASE + "DataS1_Donor_table.csv",
            "d50138865487b6a913a23d0b0bf0473f6b7414f994803d1ae5656903c036943b",
        ),
    },
    "mouse_l1_bridge": {
        "ephys": DataFile(
            "mouse_l1_bridge_chartrand2023/aibs_mouse_features_E.csv",
            _BRIDGE_BASE + "aibs_mouse_features_E.csv",
            "8d6205e336ed6fc428d5fe9488940335f6932a11b2f49d31974de283e1f172e3",
        ),
        "meta": DataFile(
            "mouse_l1_bridge_chartrand2023/mouse_l1_dataset_2023_02_06.csv",
            _BRIDGE_BASE + "mouse_l1_dataset_2023_02_06.csv",
            "d3c9c8957236bdd2e30a5575a59502a43f9e6b5b1a1e6c050bcf096f74800405",
        ),
    },
}

DATASET_NAMES: tuple[str, ...] = tuple(DATASET_FILES)


def all_files() -> list[DataFile]:
    """Every registered file, in a stable order."""
    return [f for files in DATASET_FILES.values() for f in files.values()]

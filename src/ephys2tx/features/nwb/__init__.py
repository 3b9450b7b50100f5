"""IPFX feature vectors from raw NWB 2 and Axon ABF current-clamp recordings (see docs/nwb.md)."""

from .abf import load_protocol_map
from ephys2tx.data.extracted import as_dataset, normalise_labels
from .extract import extract_features, load_feature_table, read_feature_table
from .vectors import COMPACT_FAMILIES, COMPACT_LAYOUT, FAMILIES, IPFX_FAMILIES, SUMMARY_FEATURES, extract_cell

__all__ = ["extract_features", "load_feature_table", "read_feature_table", "as_dataset", "normalise_labels",
           "extract_cell", "load_protocol_map", "FAMILIES", "IPFX_FAMILIES", "COMPACT_FAMILIES", "COMPACT_LAYOUT",
           "SUMMARY_FEATURES"]

"""IPFX feature vectors from raw NWB 2 current-clamp recordings (see docs/nwb.md)."""

from .dataset import as_dataset, normalise_labels
from .extract import extract_features, load_feature_table, read_feature_table
from .vectors import COMPACT_LAYOUT, FAMILIES, extract_cell

__all__ = ["extract_features", "load_feature_table", "read_feature_table", "as_dataset", "normalise_labels",
           "extract_cell", "FAMILIES", "COMPACT_LAYOUT"]

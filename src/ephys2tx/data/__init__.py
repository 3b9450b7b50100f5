"""Datasets: registry of the public Patch-seq tables, data directory, fetch and loaders."""

from ephys2tx.data.datasets import PatchSeqDataset, load_dataset
from ephys2tx.data.paths import resolve_data_dir

__all__ = ["PatchSeqDataset", "load_dataset", "resolve_data_dir"]

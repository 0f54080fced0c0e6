"""Data: sources (folders, tables, built-ins), splits, and per-modality decoding."""

from .dataset import Dataset, PseudoLabels, Splits
from .sources import data_task, load_data, make_splits, read_test_data

__all__ = ["Dataset", "PseudoLabels", "Splits", "data_task", "load_data", "make_splits", "read_test_data"]

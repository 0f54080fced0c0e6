"""Data: sources (folders, tables, built-ins), splits, and per-modality decoding."""

from .dataset import Dataset, Splits
from .sources import load_data, make_splits

__all__ = ["Dataset", "Splits", "load_data", "make_splits"]

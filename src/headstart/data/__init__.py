"""Data: sources (folders, tables, built-ins), splits, unlabeled data, and leaving out unreadable items."""

from .dataset import Dataset, PseudoLabels, Splits
from .sources import data_task, load_data, make_splits, read_test_data
from .unlabeled import UnlabeledData, read_unlabeled

__all__ = ["Dataset", "PseudoLabels", "Splits", "UnlabeledData", "data_task", "load_data", "make_splits",
           "read_test_data", "read_unlabeled"]

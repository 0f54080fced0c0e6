"""Evaluation: metrics, calibration and readable reports."""

from .metrics import classification_metrics, expected_calibration_error
from .report import print_metrics

__all__ = ["classification_metrics", "expected_calibration_error", "print_metrics"]

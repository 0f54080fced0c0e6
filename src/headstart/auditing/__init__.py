"""Fix the data, not only the model: `audit` finds likely label errors, duplicates, leaks across splits, outliers
and overlapping classes; `suggest` picks which unlabeled items to label next. Both work on one embedding pass of a
pre-trained backbone (through the embedding cache that `fit` uses) plus seconds of scikit-learn."""

from .data_audit import AuditResult, audit
from .suggestions import Suggestion, suggest

__all__ = ["AuditResult", "Suggestion", "audit", "suggest"]

"""The kinds of findings an audit reports (each with its name in the plural, as counts read), in the order its page
and list show them."""

KINDS = {
    "label_error": "likely label errors",
    "ambiguous_label": "ambiguous labels (kept in the clean table)",
    "leak": "duplicates across fit's splits (leaks)",
    "against": "duplicates of an item of the other data",
    "duplicate": "duplicates within one split",
    "conflicting": "duplicates with different labels",
    "outlier": "outliers",
    "unreadable": "unreadable items",
}

"""Evaluation protocol: splits, cross-validation, metrics and statistics."""

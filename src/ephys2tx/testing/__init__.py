"""Helpers for tests and benchmarks (synthetic data generators)."""

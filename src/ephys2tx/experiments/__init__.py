"""Experiments that the study and the docs report: the shift benchmark and the checks of ``map``.

They compute and return results (no file is written here): :func:`run_study`
runs the shift benchmark, ``benchmarks/bench_shift.py`` prints it, and
``scripts/mapping_figures.py`` draws the figures of ``docs/mapping.md``.
"""

"""Benchmarks of bus_tasks against side-by-side baselines: ``python -m bench`` (see docs/performance.md)."""

"""Benchmarks: each prints one JSON object with side-by-side rows measured in one run."""

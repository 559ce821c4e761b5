"""Benchmarks: timings of tlgan's hot paths against baselines, measured on the same data."""

"""Benchmarks: speed and memory reports. Tests assert behaviour; these only measure and print."""

"""Benchmarks, run by `make bench` (never by the default test run)."""

"""Benchmarks of the IPT CDS service: run them with benchmarks/run (not part of the tests)."""

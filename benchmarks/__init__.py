"""Throughput harness: lit_infer against the loops users write by hand, and against the ceilings. See BENCHMARKS.md."""

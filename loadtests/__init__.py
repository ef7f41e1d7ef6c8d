"""Load tests and benchmarks for ehrsim (see docs/benchmarks.md)."""

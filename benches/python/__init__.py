"""Python-level micro-benchmarks of the tidelog storage engine (issue #2)."""

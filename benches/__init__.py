"""tidelog benchmarks (run with ``pytest benches``; see benches/README.md)."""

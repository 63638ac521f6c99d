"""meshmedia's benchmark suite: `python -m benchmarks` (see native_notes/benchmarks.md)."""

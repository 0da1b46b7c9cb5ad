"""Workflows: what the command line runs end to end (the demo bundle, the experiment grid, the benchmarks)."""

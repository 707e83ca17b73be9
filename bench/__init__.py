"""tunecell's benchmark harness: `python -m bench <row>` (see bench/README.md). Not part of the package or tests."""

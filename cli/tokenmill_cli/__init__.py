"""The `tokenmill` command line: a thin layer over the tokenmill library."""

"""Report layer: figures and the results folder (the only layer, with the CLI, that writes files)."""

"""The stages of main.py's pipeline: presets, subprocess stages with progress, the results table."""

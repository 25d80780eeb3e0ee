"""The ugd command line (Typer)."""

"""Command-line interface (thin layer over the library)."""

"""Command-line interface (``clearmamba --help``)."""

"""One module per ``harness`` subcommand, each with ``add_parser`` and ``run``."""

"""The certification suite: one module per capability, on the kit's public bases.

Every cell runs it by default (matrix.toml ``defaults.suites``); ``harness
certify CELL`` turns its results into a report with a verdict per capability.
Tests respect the cell's world size: what needs more ranks, or an even count,
is skipped with the reason, so world size 1 passes or skips cleanly.
"""

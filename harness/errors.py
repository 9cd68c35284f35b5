"""Errors that mean "the input is wrong": the CLI prints them in one line, exit 2."""


class UsageError(Exception):
    """Bad input (a flag, a cell, a file, the host): the message names the fix."""

"""The `meshmedia` command line: click commands that map options onto a Config and call
the library; library errors become one clear line and an exit code."""

from __future__ import annotations

from .root import cli, main

__all__ = ["cli", "main"]

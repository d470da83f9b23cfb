"""The `run` command (the batch runner)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

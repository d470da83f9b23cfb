"""Every command beyond the schema ones, gathered for cli.py to register."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

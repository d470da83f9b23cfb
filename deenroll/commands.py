"""Every command beyond the schema ones, gathered for cli.py to register."""

from __future__ import annotations

import click

from . import cli_ops, cli_run

COMMANDS: list[click.Command] = [*cli_run.COMMANDS, *cli_ops.COMMANDS]

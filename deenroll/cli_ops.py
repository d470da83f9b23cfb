"""Operations commands: health-check, stuck, stats, backup, maintenance, demo."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

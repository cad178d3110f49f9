"""``smartblock`` commands of the ranking stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands and command groups to the root app."""

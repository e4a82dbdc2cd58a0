"""Small pieces of terminal UI shared by the commands."""

from __future__ import annotations

from typing import Callable


def stage_progress(bar) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` callback drawing one rich task per stage."""
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None)
        bar.update(tasks[stage], completed=done, total=total or None)

    return progress

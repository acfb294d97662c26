"""Composition roots: each process's settings, wiring and run; ``bus-tasks`` starts at :func:`main`."""

from __future__ import annotations

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def main() -> int:
    """``bus-tasks``: Ctrl-C while its modules load (most of a second) ends it as quietly as later."""
    try:
        from bus_tasks.workers.cli import main as run  # noqa: PLC0415 - loading it is what Ctrl-C may cut short
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return run()

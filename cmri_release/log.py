"""The `cmri_release` logger: progress and notes go through `logging`, so a pipeline can route them.

A library stays silent unless its user configures logging (a `NullHandler`, as the logging HOWTO asks of
libraries). The command line installs one handler that prints the bare message on stderr through click,
so its output is what it always was; a user who has configured the `cmri_release` logger (or the root
logger) keeps their own routing. Errors the CLI reports (`error: <file>: <problem>`) are its contract and
stay plain output, not log records.
"""
from __future__ import annotations

import logging

import click

logger = logging.getLogger("cmri_release")
logger.addHandler(logging.NullHandler())


def get_logger(name: str | None = None) -> logging.Logger:
    """`cmri_release` or one of its children (`get_logger("audit")` -> `cmri_release.audit`)."""
    return logger.getChild(name) if name else logger


class EchoHandler(logging.Handler):
    """Each record's bare message on stderr through click (so click's test runner captures it too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure_cli_logging() -> None:
    """INFO and above, printed on stderr unless the user already routes the `cmri_release` or root logger."""
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    routed = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    if routed or logging.getLogger().handlers:
        return
    handler = EchoHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)

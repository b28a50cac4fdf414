"""The errors a job tells apart by type: what the user must fix (a usage or layout error: one line, exit 2) and
what becomes a quarantine entry (`BadInput`: the input cannot become a sample)."""

from __future__ import annotations

__all__ = ["BadInput", "LayoutError", "UsageError"]


class LayoutError(ValueError):
    """The input is not a layout the job knows, or a layout with a piece missing: `error: <message>`, exit 2."""


class UsageError(ValueError):
    """Options that do not fit the input (an unknown split, a file missing for a split): answered as argparse
    answers bad usage, `<prog>: error: <message> (see --help)`, exit 2."""


class BadInput(ValueError):
    """This input cannot become a sample; the message is the quarantine reason, `stage` where it was found."""

    def __init__(self, reason: str, *, stage: str = "decode"):
        super().__init__(reason)
        self.stage = stage

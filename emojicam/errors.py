"""Errors users see. Each message names what is wrong and what to do."""

from __future__ import annotations


class EmojiCamError(Exception):
    """Base for errors that the CLI prints as one line (no traceback)."""


class SetupError(EmojiCamError):
    """A file EmojiCam needs is missing or invalid (model, labels, emoji)."""


class InputError(EmojiCamError):
    """An input file is missing or unreadable."""

"""Errors the product reports to its users.

Library code raises these with a message that names what is wrong (file, row, field);
the CLI prints the message and exits non-zero, without a traceback.
"""

from __future__ import annotations


class RakutenError(Exception):
    """Base class of the errors shown to users as a one-line message."""

    exit_code: int = 1


class DataError(RakutenError):
    """Input data is missing or unusable (bad file, column, row or value)."""


class DownloadError(RakutenError):
    """The dataset could not be downloaded (offline, HTTP error, checksum, unsafe archive)."""


class ModelError(RakutenError):
    """A model could not be trained, loaded or used."""


class RegistryError(RakutenError):
    """A registry operation is impossible (unknown model, version or alias)."""

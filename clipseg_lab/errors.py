"""The exceptions users see. Each message names the file or name involved and how to fix it."""

from __future__ import annotations


class ClipsegLabError(Exception):
    """Base class for every error this package raises on purpose."""


class WeightsNotFoundError(ClipsegLabError, FileNotFoundError):
    """Pretrained weights were looked for everywhere they may be and were not found."""


class WeightsFormatError(ClipsegLabError, ValueError):
    """A weights file or directory exists but is not of the kind that was expected."""


class UnknownNameError(ClipsegLabError, KeyError):
    """A backbone or model name that is not registered."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class ImageReadError(ClipsegLabError, ValueError):
    """An image that is missing, unreadable or of an unsupported layout."""


class PromptError(ClipsegLabError, ValueError):
    """An empty prompt list or an empty prompt."""


class ConfigError(ClipsegLabError, ValueError):
    """A configuration with unknown keys or impossible values."""


class DeviceError(ClipsegLabError, ValueError):
    """A device name that torch does not know, or one this machine does not have (e.g. cuda without CUDA)."""


class OutputDirError(ClipsegLabError, ValueError):
    """An output folder that may not be written: another tool's files, or one that holds the inputs."""


class DatasetError(ClipsegLabError, ValueError):
    """A dataset folder that cannot be read: empty, missing split file, missing annotation file."""

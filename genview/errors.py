"""Errors a user can fix by asking differently; the console script answers them with exit code 2."""


class UsageError(Exception):
    """The command cannot run as asked (missing or empty input, conflicting options); the message says why."""


class NoImagesError(UsageError, ValueError):
    """An image source (folder, file list, URL) holds no images, or does not exist."""

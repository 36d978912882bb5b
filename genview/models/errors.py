"""Errors of model loading."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded (no network, missing folder, no GPU, …); the message says what to do."""

"""Split by concern into services/errors.py, auth.py, guard.py, limits.py, metrics.py, health.py and app.py.

Only `ApiError` is re-exported here, for the modules that still import it from this path
(services/scorer/pairs.py, services/generator/gallery.py); remove once they import services.errors."""

from services.errors import ApiError

__all__ = ["ApiError"]

"""Optional dependencies: importing them, and the error that says what to install.

``pyarrow`` (:mod:`tidelog.arrow`, ``tidelog export``), ``prometheus_client`` and
``opentelemetry-api`` (:mod:`tidelog.metrics`) are extras, not requirements: tidelog works
without them, and the features that need them raise :class:`MissingDependencyError`.
"""

from __future__ import annotations

import importlib
from typing import Any

from tidelog.errors import TidelogError

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(TidelogError, ImportError):
    """A feature needs an optional package that is not installed; the message says which.

    Also an :class:`ImportError`, so ``except ImportError`` around an optional feature
    catches it as it would the import itself.
    """


def require(feature: str, module: str, package: str, extra: str) -> Any:
    """Imports the optional ``module``, or raises :class:`MissingDependencyError`.

    Args:
        feature: What needs it, for the message (``"Topic.to_arrow()"``).
        module: The module to import (``"pyarrow"``).
        package: The PyPI package that provides it.
        extra: The tidelog extra that installs it (``pip install 'tidelog[EXTRA]'``).

    Returns:
        The module.

    Raises:
        MissingDependencyError: The package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs the {package!r} package, which is not installed: "
            f"pip install {package} (or pip install 'tidelog[{extra}]')"
        ) from e

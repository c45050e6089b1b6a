"""Shared, domain-agnostic engine of the suite.

Nothing in ``core`` imports from ``domains`` or ``dashboards``: arrows point one way,
dashboards -> domains -> core.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"

"""The console's pages; cortex_app.py registers each one."""

from .overview import overview

__all__ = ["overview"]

"""tadkit: temporal action detection — extract features, detect actions, evaluate."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Privacy auditors: nearest-neighbour memorisation and membership inference (registered on import)."""
from . import memorisation, mia, real_copies  # noqa: F401 - importing registers the auditors

__all__ = ["memorisation", "mia", "real_copies"]

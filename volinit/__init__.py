"""volinit: make Docker volumes and temp dirs usable by a non-root, read-only service."""

__version__ = "0.1.0"

"""Keep Docker workspace containers on the newest published template image."""

__version__ = "0.1.0"

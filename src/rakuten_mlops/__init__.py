"""Rakuten France product classification platform."""

__version__ = "0.1.0"

"""Synthesis methods, listed in ``registry.py``.  WASP; Aug-PE and zero-shot are configurations of it (docs/wasp.md)."""

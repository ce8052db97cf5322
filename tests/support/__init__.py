"""Helpers shared by the integration tests (imported as ``support.*``; fixtures stay in conftest.py)."""

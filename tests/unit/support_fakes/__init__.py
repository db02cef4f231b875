"""Tiny stand-in programs for testing the test harness itself (tests/support)."""

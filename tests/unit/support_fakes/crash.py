"""Exits at once with an error, like an operator that crashes on start-up."""

import sys

print("Traceback (most recent call last):\nRuntimeError: boom", flush=True)
sys.exit(3)

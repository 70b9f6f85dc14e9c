"""Timing and parity: NumPy only."""

"""Audiences beyond one user: segments (the filter grammar) and the broadcast/segment
fan-out (DESIGN.md §4c)."""

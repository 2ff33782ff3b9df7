"""Shared fixtures: see the modules they come from."""

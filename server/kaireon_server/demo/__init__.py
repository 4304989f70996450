"""Deterministic synthetic demo data."""

"""Errors shared across the platform, importable without heavy dependencies."""


class DataError(ValueError):
    """Raised for missing or malformed input data, with a message naming the problem."""

"""Flight-delay MLOps platform: shared contract, data preparation, config and CLI."""

__version__ = "0.1.0"

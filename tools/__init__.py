"""Developer tooling (manifest checks, headless-browser screenshots): never installed or imported
by the product packages, which an import-linter contract in pyproject.toml enforces."""

"""The package version, one place for the package face and the modules that record it."""

__version__ = "0.1.0"

"""The package version: one place, read by the package, the run records and the build."""

__version__ = "0.1.0"

"""The `histoflow` command line (`histoflow.cli.app`); `python -m histoflow.cli` runs it too."""

from histoflow.cli.app import app

__all__ = ["app"]

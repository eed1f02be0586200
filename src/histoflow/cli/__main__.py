"""`python -m histoflow.cli` (used by DDP launchers and tests)."""

import sys

from histoflow.cli.app import app

if __name__ == "__main__":
    sys.exit(app())

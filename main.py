"""`python main.py` == `maskbench`: no arguments opens the workbench on the last (or demo) project."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())

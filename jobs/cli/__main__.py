"""`python -m jobs.cli ...` is the `oasis` command."""
import sys

from jobs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

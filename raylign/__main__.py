"""`python -m raylign ...`: the CLI through a given interpreter (e.g. a cluster job whose PATH lacks the venv)."""

import sys

from raylign.cli import main

sys.exit(main())

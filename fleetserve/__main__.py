"""`python -m fleetserve`: the fleetserve command, for an environment without its console script on PATH."""

import sys

from fleetserve.cli import main

sys.exit(main())

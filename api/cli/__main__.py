"""``python -m api.cli``: the command line, as the ``cathlab-edge`` script runs it."""
import sys

from api.cli.main import main

sys.exit(main())

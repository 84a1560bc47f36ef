"""``python -m flwr_multilevel``: the ``flwr-multilevel`` command line."""

import sys

from flwr_multilevel.cli.main import main

sys.exit(main())

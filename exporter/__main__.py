"""`python -m exporter` is the `layer-sharing-exporter` command."""

import sys

from exporter.cli.main import main

sys.exit(main())

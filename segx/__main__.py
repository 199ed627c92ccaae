"""``python -m segx``: the segx command line."""
import zlib  # noqa: F401  (before paddle)
import sys

from segx.apps.cli import main

sys.exit(main())

"""``python main.py -c MODEL -o Global.mode=... -o K=V``: the segx command line."""
import zlib  # noqa: F401  (before paddle; see segx/backend/__init__.py)
import sys

from segx.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())

import sys

from graphdiff.cli import main

sys.exit(main())

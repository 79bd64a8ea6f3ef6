import sys

from distkeras.frontends.cli import main

sys.exit(main())

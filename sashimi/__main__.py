import sys

from sashimi.cli.main import main

sys.exit(main())

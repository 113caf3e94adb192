import sys

from adaptive_lb.cli import main

sys.exit(main())

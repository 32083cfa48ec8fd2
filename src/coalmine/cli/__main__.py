"""`python -m coalmine.cli`."""

import sys

from coalmine.cli import main

sys.exit(main())

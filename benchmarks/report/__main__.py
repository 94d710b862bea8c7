"""`python -m benchmarks.report`: write docs/benchmarks.md."""

import sys

from benchmarks.report import main

sys.exit(main())

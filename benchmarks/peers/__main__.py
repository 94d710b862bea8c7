"""`python -m benchmarks.peers`: run the comparison, a PEFT worker, or
write docs/peers.md."""

import sys

from benchmarks.peers import main

sys.exit(main())

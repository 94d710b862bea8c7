"""`python -m beft_keras` runs the `beft` command."""

import sys

from beft_keras.cli import main

sys.exit(main())

"""`python -m seppo_lib.cli` (used by `accelerate launch -m seppo_lib.cli ...`)."""

import sys

from seppo_lib.cli import main

sys.exit(main())

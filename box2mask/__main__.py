"""`python -m box2mask ...` and `torchrun ... -m box2mask train ...`: the `box2mask` command."""

import sys

from box2mask.cli import main

sys.exit(main())

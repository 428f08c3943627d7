"""`python -m pushd` is the `pushd` command."""

from __future__ import annotations

import sys

from pushd.cli.main import main

sys.exit(main())

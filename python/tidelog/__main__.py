"""``python -m tidelog``: the same command line as the ``tidelog`` script."""

from tidelog.cli import main

raise SystemExit(main())

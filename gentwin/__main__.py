"""``python -m gentwin``: the same command as the ``gentwin`` console script."""

from gentwin.cli import main

raise SystemExit(main())

"""``python -m gentwin``: the same command as the ``gentwin`` console script."""

from gentwin.cli import main

if __name__ == "__main__":  # not when a test collector imports this module
    raise SystemExit(main())

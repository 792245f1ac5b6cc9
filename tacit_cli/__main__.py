"""`python -m tacit_cli ...` is the `tacit` command."""

from tacit_cli.cli import main

raise SystemExit(main())

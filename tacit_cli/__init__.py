"""Composition roots: the `tacit` command line (`tacit_cli.cli`), the local launcher `tacit up` (`tacit_cli.up`) and
the workers' Celery app (`tacit_cli.worker`). The only package that may import every service; nothing imports it."""

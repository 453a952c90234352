"""`python -m streams` is the `streamfer` command."""

from streams.cli.app import app

app()

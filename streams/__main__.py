"""`python -m streams` is the `streamfer` command."""

from streams.cli import app

app()

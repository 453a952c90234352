"""The `streamfer` command: every typer command, thin (parse → validated settings → call).
Only this package imports typer."""

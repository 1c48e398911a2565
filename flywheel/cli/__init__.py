"""The `flywheel` command line: typer commands over the same operations the admin API exposes."""

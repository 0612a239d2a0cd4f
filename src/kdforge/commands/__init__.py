"""CLI sub-commands beyond demo/run. Each module here defines `register(app)`;
`kdforge.cli` calls it for every module, so adding a command never edits cli.py."""

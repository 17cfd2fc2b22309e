"""The command line: Typer parses, Hydra composes, the layers below do the work."""

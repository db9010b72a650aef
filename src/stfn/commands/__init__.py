"""One module per ``stfn`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""

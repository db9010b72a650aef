"""The tests of each ``stfn`` subcommand on the command line, one file per module of
``src/stfn/commands/``. A package, so that ``test_export.py`` here and ``tests/test_export.py`` (the
library module it drives) can both be collected."""

import sys

from stfn.cli import main

sys.exit(main())

import sys

from gpae_ref.experiments.cli import main

sys.exit(main())

"""Train GPAE on SMAX 3m (the README's main job) through the same entry point as the CLI.

    python examples/train_smax.py                 # = python -m gpae_ref.train --preset demo
    python examples/train_smax.py --reuse 4       # any CLI flag is passed through

Prints the final greedy win rate and where the curve is (runs/<name>/curve.png).
"""

import sys

from gpae_ref.train import main

if __name__ == "__main__":
    sys.exit(main(["--preset", "demo", *sys.argv[1:]]))

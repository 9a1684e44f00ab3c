"""The offline demo catalog as a command (the work is in catalog/demo.py).

python demo.py --size 2000            # build (or load) the cached catalog and print its precision@5
python demo.py --make-subset          # regenerate data/fashion-mnist-subset.npz from the Debian package
"""

import sys

from catalog.demo import main
from common.cli import run

if __name__ == "__main__":
    sys.exit(run(main))

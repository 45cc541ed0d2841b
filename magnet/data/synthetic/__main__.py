"""``python -m magnet.data.synthetic --out data``: build the synthetic dataset and print a summary."""

import sys

from magnet.data.synthetic.dataset import main

sys.exit(main())

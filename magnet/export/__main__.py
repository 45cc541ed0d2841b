"""``python -m magnet.export <npz or run dir> --format smplx|bvh --out DIR [--sample K]``."""

import sys

from magnet.export.run import main

sys.exit(main())

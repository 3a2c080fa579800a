"""Regenerate the embedded Fashion-MNIST subset (src/simclrv2/assets/) from the full data set.

python scripts/make_embedded_data.py /usr/share/datasets/fashion-mnist
"""

import argparse
from pathlib import Path

from simclrv2.data.embedded import build_embedded

ASSETS = Path(__file__).resolve().parents[1] / "src" / "simclrv2" / "assets"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of the full Fashion-MNIST IDX files")
    parser.add_argument(
        "--out", type=Path, default=ASSETS, help=f"target folder (default {ASSETS})"
    )
    args = parser.parse_args()
    build_embedded(args.source, args.out)

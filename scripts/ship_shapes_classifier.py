"""Train the shapes classifier (the FID/KID features for the built-in `shapes` data) and write the weights
that the package ships, one file per image size, so that every machine scores with the same judge.

    python scripts/ship_shapes_classifier.py [SIZE ...]     (default: every size in SHIPPED_SIZES)

Run it only together with a new NAME in trainer/evaluation/shapes_features.py: scores carry the name,
and new weights under the old name would silently move every figure recorded with it (see that
module's docstring for why the weights are shipped rather than trained on each machine).
"""

from __future__ import annotations

import argparse

from trainer.evaluation import shapes_features
from trainer.hashing import sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", type=int, nargs="*", default=list(shapes_features.SHIPPED_SIZES))
    args = parser.parse_args()
    for size in args.sizes:
        model = shapes_features.train_extractor(size)
        path = shapes_features.shipped_path(size)
        shapes_features.save_extractor(model, size, path)
        accuracy = shapes_features.attribute_accuracy(model, size, 2000, seed=999_331)
        print(f"{path}: sha256 {sha256_file(path)}, on 2,000 fresh shapes: shape {accuracy['shape']:.1%}, "
              f"colour {accuracy['colour']:.1%}")


if __name__ == "__main__":
    main()

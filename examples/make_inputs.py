#!/usr/bin/env python3
"""Write the gallery's input photos to examples/inputs/ (offline: scikit-image's bundled samples).

The 2015 gallery's photos cannot be shipped; these are freely licensed (see scikit-image's
data documentation) and come with scikit-image, which cnn-vis installs.
"""
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

# File name -> scikit-image sample (stereo_motorcycle is a (left, right, disparity) triple).
SAMPLES = {
    "astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea,
    "rocket": data.rocket, "hubble_deep_field": data.hubble_deep_field,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
}
FOLDER = Path(__file__).resolve().parent / "inputs"


def chelsea_mask() -> np.ndarray:
    """A mask for chelsea.png (451x300) for examples/beyond_mask.sh: black on the left
    third, a ramp to white across the middle third, white on the right third."""
    ramp = np.clip((np.arange(451) - 150) / 150, 0, 1)                # (451,)
    return np.rint(255 * np.tile(ramp, (300, 1))).astype(np.uint8)    # (300, 451)


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, sample in {**SAMPLES, "chelsea_mask": chelsea_mask}.items():
        path = FOLDER / f"{name}.png"
        if not path.exists():
            Image.fromarray(sample()).convert("RGB").save(path)
        print(path)


if __name__ == "__main__":
    main()

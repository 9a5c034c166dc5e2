#!/usr/bin/env python3
"""Write the gallery's input photos to examples/inputs/ (offline: scikit-image's bundled samples).

The 2015 gallery's photos cannot be shipped; these are freely licensed (see scikit-image's
data documentation) and come with scikit-image, which cnn-vis installs.
"""
from pathlib import Path

from PIL import Image
from skimage import data

# File name -> scikit-image sample (stereo_motorcycle is a (left, right, disparity) triple).
SAMPLES = {
    "astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea,
    "rocket": data.rocket, "hubble_deep_field": data.hubble_deep_field,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
}
FOLDER = Path(__file__).resolve().parent / "inputs"


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, sample in SAMPLES.items():
        path = FOLDER / f"{name}.png"
        if not path.exists():
            Image.fromarray(sample()).convert("RGB").save(path)
        print(path)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write the gallery's input photos to examples/inputs/ (offline: scikit-image's bundled samples),
and a short video made from one of them.

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


def write_camera_pan(path: Path, frames: int = 36, fps: int = 12) -> None:
    """A video for examples/animation_video.sh: a 240x320 camera that pans across the
    coffee photo (400x600), 5 px right and 1 px down per frame, as H.264 at a high quality."""
    import av  # PyAV, which cnn-vis installs for videos

    photo = data.coffee()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = 240, 320, "yuv420p"
        stream.options = {"crf": "12"}
        for index in range(frames):
            top, left = 60 + index, 40 + 5 * index
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(photo[top:top + 240, left:left + 320]), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, sample in {**SAMPLES, "chelsea_mask": chelsea_mask}.items():
        path = FOLDER / f"{name}.png"
        if not path.exists():
            Image.fromarray(sample()).convert("RGB").save(path)
        print(path)
    video = FOLDER / "coffee_pan.mp4"
    if not video.exists():
        write_camera_pan(video)
    print(video)


if __name__ == "__main__":
    main()

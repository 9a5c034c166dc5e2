#!/usr/bin/env python3
"""Peak memory of a dreamed video against its length: frames are streamed, so a 300-frame
video should take the same memory as a 30-frame one (within 10%).

    .venv/bin/python benchmarks/video_memory.py [--frames 30,300] [--keep]

Each run is the command line in its own process (a 640x360 H.264 video of a camera panning
across a photo, one step per frame with the dream carried along the optical flow, written
as MP4 and as frame PNGs); its peak resident memory is read from the kernel (ru_maxrss of
the child). Prints one line per length and the ratio of the longest to the shortest.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = (360, 640)   # (height, width)


def write_pan_video(path: Path, frames: int, fps: int = 30) -> None:
    """A camera panning across the coffee photo (scaled up to leave room), H.264."""
    photo = np.array(Image.fromarray(data.coffee()).resize((1500, 1000)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = *SIZE, "yuv420p"
        for index in range(frames):
            top, left = (index // 2) % 600, (3 * index) % 800
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(photo[top:top + SIZE[0], left:left + SIZE[1]]), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def dream_video(video: Path, output: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of the command line dreaming `video`."""
    command = [sys.executable, str(REPO_ROOT / "cnn_vis.py"), "--model", "efficientnet_lite0",
               "--gpu", "-1", "--target_layer", "stage2/block2", "--num_steps", "1",
               "--batch_size", "8", "--iter_behavior", "", "--seed", "0",
               "--input_video", str(video), "--output_file", str(output)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)   # this child's own peak (ru_maxrss, kB)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"cnn_vis.py failed: {child.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="30,300", help="video lengths, shortest first")
    parser.add_argument("--keep", action="store_true", help="keep the videos and frames")
    args = parser.parse_args()
    lengths = [int(n) for n in args.frames.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cnn-vis-video-"))
    peaks = {}
    for frames in lengths:
        video = work / f"pan{frames}.mp4"
        write_pan_video(video, frames)
        seconds, peaks[frames] = dream_video(video, work / f"dream{frames}.mp4")
        print(f"{frames:4d} frames of {SIZE[1]}x{SIZE[0]}: {seconds:6.1f} s "
              f"({seconds / frames:.2f} s/frame), peak resident memory {peaks[frames]:.0f} MB",
              flush=True)
    longest, shortest = max(lengths), min(lengths)
    print(f"peak memory, {longest} frames over {shortest}: {peaks[longest] / peaks[shortest]:.3f}")
    if args.keep:
        print(f"kept in {work}")
    else:
        subprocess.run(["rm", "-rf", str(work)], check=True)


if __name__ == "__main__":
    main()

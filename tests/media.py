"""Small videos for the tests, made with PyAV: a textured square moving over a still
textured background, with a sine tone; and videos that lie: cut short, or declaring
another frame size than they hold."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 44100


def moving_square_frames(count: int, size: tuple[int, int], speed: int, side: int = 20,
                         seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB frames (H, W, 3): a square of random texture that moves `speed` pixels
    right per frame over a dimmer random texture."""
    rng = np.random.default_rng(seed)
    height, width = size
    background = (rng.integers(0, 256, (height, width, 3)) * 0.5).astype(np.uint8)
    texture = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    top = (height - side) // 2
    frames = []
    for index in range(count):
        frame = background.copy()
        left = 2 + speed * index
        frame[top:top + side, left:left + side] = texture
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, tone: bool = True,
                codec: str = "libx264", rotation: float | None = None,
                faststart: bool = False) -> Path:
    """An MP4 (H.264, near-lossless) of `frames`, with a 440 Hz AAC tone as long as the frames.
    `rotation`: the display matrix's turn, in degrees anticlockwise (PyAV's convention; a
    phone held upright records -90); `faststart`: the index before the frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        if rotation is not None:
            stream.set_display_rotation(rotation)
        stream.pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"
        stream.options = {"crf": "0"} if codec == "libx264" else {}
        audio = container.add_stream("aac", rate=SAMPLE_RATE) if tone else None
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            seconds = Fraction(len(frames), fps)
            t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode(None))
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction, float | None]:
    """(uint8 RGB frames, frame rate, audio duration in seconds or None) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, rate, None
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
        return frames, rate, samples / audio.codec_context.sample_rate


def cut_short(path: Path, keep: int) -> Path:
    """`path` (a faststart MP4, whose header declares every frame) cut in the middle of the
    packet of frame `keep` + 1: `keep` frames decode."""
    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(container.streams.video[0]) if packet.size]
    cut = packets[keep]
    data = path.read_bytes()
    path.write_bytes(data[:cut.pos + cut.size // 2])
    return path


def avi_declaring(path: Path, size: tuple[int, int], frames: int = 3) -> Path:
    """An AVI of raw 16x16 frames whose headers declare frames of `size` (height, width)."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "bgr24"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    height, width = size
    avih = data.index(b"avih") + 8                 # dwWidth, dwHeight are its 9th and 10th
    struct.pack_into("<ii", data, avih + 32, width, height)
    strf = data.index(b"strf") + 8                 # BITMAPINFOHEADER: biSize, biWidth, biHeight
    struct.pack_into("<ii", data, strf + 4, width, -height)   # negative: rows top-down
    path.write_bytes(bytes(data))
    return path


def frames_encoded(monkeypatch) -> dict[int, list[bytes]]:
    """The frames each video writer made from now on is given, in order (one list per
    writer, in the order they were made): what a video holds, before the lossy encoder (whose bytes, for the same frames,
    have been seen to differ now and then under load)."""
    from cnnvis.video import VideoWriter
    writers: dict[int, list[bytes]] = {}
    write = VideoWriter.write

    def recorded(writer, rgb):
        writers.setdefault(id(writer), []).append(np.ascontiguousarray(rgb).tobytes())
        write(writer, rgb)

    monkeypatch.setattr(VideoWriter, "write", recorded)
    return writers

"""Videos in and out, one frame at a time (PyAV, FFmpeg's libraries): memory does not grow
with a video's length.

The output is written as every output is: into a hidden temporary file beside it,
renamed over the target only once complete (`cnnvis.imageio.atomic_write`). An input's
sound is copied into the output unchanged where the output's container can hold it,
and re-encoded (AAC in MP4, Opus in WebM) where it cannot.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideData
from PIL import Image

from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.imageio import PathLike, atomic_write, check_writable_output
from cnnvis.motion import upright
from cnnvis.settings import VIDEO_SUFFIXES
from cnnvis.sizes import MAX_PIXELS

logger = logging.getLogger("cnnvis")

# Output suffix -> (FFmpeg container, video encoder, its options, audio codecs the
# container takes as they are, the audio encoder for any other).
CONTAINERS = {
    ".mp4": ("mp4", "libx264", {"crf": "18", "preset": "medium"},
             {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}, "aac"),
    ".webm": ("webm", "libvpx-vp9", {"crf": "30", "b": "0", "row-mt": "1"},
              {"opus", "vorbis"}, "libopus"),
}
DEFAULT_FPS = Fraction(24)
# Stills in a video's clothes: FFmpeg's still-image demuxers (a PNG renamed .mp4), HEIF and
# AVIF photos, and a file of a single frame of a still image's codec.
STILL_FORMATS, STILL_BRANDS = {"image2", "image2pipe"}, {"avif", "heic", "heix", "mif1"}
STILL_CODECS = {"mjpeg", "png", "apng", "gif", "webp", "bmp", "tiff", "jpeg2000", "jpegls",
                "jpegxl", "ppm", "pgm", "pbm", "pam", "qoi", "targa", "sgi", "exr", "dpx",
                "pcx", "hdr", "xbm", "xpm", "xwd", "sunrast", "photocd", "psd", "ljpeg"}


def check_video_output(path: PathLike) -> None:
    """Refuse, before any work, an output of frames that cnn-vis cannot write."""
    target = Path(path)
    if target.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"output file '{target}' must end in {', '.join(VIDEO_SUFFIXES)} for a "
                        f"zoom sequence or a dreamed video; use e.g. '{target.with_suffix('.mp4')}'")
    check_writable_output(target, VIDEO_SUFFIXES)


class VideoInput:
    """A video file opened for reading: its frame rate, the frame size and count it declares,
    and its frames as uint8 RGB (H, W, 3), decoded one at a time and turned upright.

    Opening decodes nothing (the caller checks the memory with `declared_size`, a size
    beyond MAX_PIXELS refused here); `check_first_frame()` then decodes frame 1. Every
    problem with the file is a UserError naming it."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._file = open_input(path, "video", "--input_video")
        try:
            self._container = av.open(self._file, mode="r")
            name = self._container.format.name
            if name in STILL_FORMATS or name.endswith("_pipe") or (
                    self._container.metadata.get("major_brand") in STILL_BRANDS):
                raise self._still()
            if not self._container.streams.video:
                raise self._no_frames()
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self.fps: Fraction = Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            self.frame_count: int | None = stream.frames or None
            self.has_audio = bool(self._container.streams.audio)
            height, width = stream.codec_context.height, stream.codec_context.width
        except av.FFmpegError as error:
            self.close()
            raise self._error(error) from None
        except BaseException:
            self.close()
            raise
        if height * width > MAX_PIXELS:
            self.close()
            raise UserError(f"'{path}' (--input_video) declares frames of {width}x{height} "
                            f"pixels, more than cnn-vis can hold (at most {MAX_PIXELS}); give "
                            "a smaller video (scale it down first), or check that it is not "
                            "damaged")
        # (height, width) as stored, before any turn (None: the header does not say)
        self.declared_size: tuple[int, int] | None = (height, width) if height * width else None
        self.size: tuple[int, int] | None = None   # (height, width) upright, from frame 1
        self.decoded_count: int | None = None       # the frames there are, once read to the end

    def check_first_frame(self) -> None:
        """Decode frame 1 (and a second of an image codec's), refusing a file none of whose
        frames decode and a single picture; `size` becomes frame 1's, upright."""
        frames = self._decoded()
        try:
            first = next(frames, None)
            if first is None:
                raise self._no_frames()
            codec = self._container.streams.video[0].codec_context.name
            if codec in STILL_CODECS and next(frames, None) is None:
                raise self._still()
        finally:
            frames.close()
        self.size = first[1].shape[:2]

    def frames(self, start: int, end: int | None) -> Iterator[tuple[int, np.ndarray]]:
        """(number from 1, uint8 RGB (H, W, 3)) of frames start..end. A file that ends
        before the frame count it declares gives the frames it has, with a warning."""
        number = 0
        for number, rgb in self._decoded():
            if end is not None and number > end:
                return
            if number >= start:
                yield number, rgb
        if self.frame_count and start <= number < self.frame_count:
            logger.warning(f"cnn-vis: '{self.path}' (--input_video) declares "
                           f"{self.frame_count} frames, but only {number} can be decoded (the "
                           "file is cut short or damaged); the output has the frames that decode.")
        self.decoded_count = number

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every frame that decodes, upright, numbered from 1; damaged packets are skipped
        (as players do), and a file of which nothing decodes is an error."""
        self._container.seek(0)
        stream = self._container.streams.video[0]
        number, damage = 0, None
        try:
            for packet in self._container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as error:
                    damage = damage or error
                    continue
                for frame in decoded:
                    number += 1
                    # The display matrix of its stream (a phone's orientation), FFmpeg's
                    # int32 a b u / c d v / x y w.
                    matrix = next((np.frombuffer(bytes(data), np.int32) for data in
                                   frame.side_data if data.type == SideData.DISPLAYMATRIX), None)
                    yield number, upright(frame.to_ndarray(format="rgb24"), matrix)
        except av.FFmpegError as error:   # the rest of the file cannot be read
            damage = damage or error
        if number == 0 and damage is not None:
            raise self._error(damage) from None

    def _still(self) -> UserError:
        return UserError(f"'{self.path}' (--input_video) is a still image, not a video; give "
                         "it with --initial_image (with --frames N for a zoom sequence)")

    def _no_frames(self) -> UserError:
        return UserError(f"'{self.path}' (--input_video) has no video frames; give a video file "
                         "that has some (an MP4, WebM, MOV or AVI)")

    def _error(self, error: Exception) -> UserError:
        return UserError(f"cannot read video '{self.path}' (--input_video): not a video FFmpeg "
                         f"can decode, or damaged ({error}); give an MP4, WebM, MOV or AVI file, "
                         "or re-export it")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()
        self._file.close()

    def __enter__(self) -> "VideoInput":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def eight_bits(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB of a uint8 or uint16 RGB frame (what videos and GIFs hold)."""
    if rgb.dtype == np.uint8:
        return rgb
    return np.rint(rgb / 257.0).astype(np.uint8)


@contextlib.contextmanager
def video_writer(path: PathLike, fps: Fraction, sound: VideoInput | None = None,
                 sound_from: float = 0.0) -> Iterator["VideoWriter | GifWriter"]:
    """A writer of frames into `path` (.mp4, .webm or .gif), which appears only when the
    block ends, holding every frame written (none at all, or a file that took no more bytes:
    no file). `sound`: a video whose audio, from `sound_from` seconds on, goes along."""
    with contextlib.suppress(_NoFrames), atomic_write(path) as file:
        if Path(path).suffix.lower() == ".gif":
            writer = GifWriter(file, fps)
        else:
            writer = VideoWriter(file, Path(path).suffix.lower(), fps, sound, sound_from)
        try:
            yield writer
        except BaseException:
            writer.abandon()
            raise
        if writer.error is not None or writer.count == 0:   # an older file stays
            writer.abandon()
            raise writer.error or _NoFrames()
        writer.finish()


class _NoFrames(Exception):
    pass


class VideoWriteError(Exception):
    """The video's file took no more bytes (a full disk); the writer's block then ends in
    the UserError that names the file and the cause."""


class _Output:
    """The file a video is encoded into, which after its first failure (`error`) takes and
    says nothing more: FFmpeg's later writes (the trailer's) pile up no exceptions."""

    def __init__(self, file):
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self._file.write(data)
            except OSError as error:
                self.error = error
                raise
        return len(data)

    def seek(self, *args) -> int:
        return self._file.seek(*args)

    def tell(self) -> int:
        return self._file.tell()


class VideoWriter:
    """Frames encoded as they come (H.264 or VP9, yuv420p), with the input's sound
    interleaved up to the time of the last frame."""

    def __init__(self, file, suffix: str, fps: Fraction, sound: VideoInput | None,
                 sound_from: float):
        self.format, self.codec, self.codec_options, self.copyable, self.audio_codec = \
            CONTAINERS[suffix]
        self.fps = Fraction(fps).limit_denominator(1001)
        self._output = _Output(file)
        self._container = av.open(self._output, mode="w", format=self.format)
        self._stream = None
        self._sound = _Sound(sound, sound_from, self.copyable, self.audio_codec) if (
            sound is not None and sound.has_audio) else None
        self.count = 0

    @property
    def error(self) -> OSError | None:   # why the file takes no more bytes
        return self._output.error

    def write(self, rgb: np.ndarray) -> None:
        """Append a frame (uint8 or uint16 RGB); the first frame decides the video's size,
        cropped to even sides (yuv420p halves the colour resolution)."""
        rgb = eight_bits(rgb)
        try:
            if self.error is not None:
                raise self.error
            if self._stream is None:
                self._open(rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2)
            rgb = np.ascontiguousarray(rgb[:self._stream.height, :self._stream.width])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = self.count
            self._container.mux(self._stream.encode(frame))
            self.count += 1
            if self._sound is not None:
                self._sound.copy_frames(self.count)
        except (OSError, av.FFmpegError) as error:
            if self.error is None:
                raise
            raise VideoWriteError(str(self.error)) from error

    def _open(self, height: int, width: int) -> None:
        self._stream = self._container.add_stream(self.codec, rate=self.fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = dict(self.codec_options)
        if self._sound is not None:
            self._sound.add_stream(self._container)

    def finish(self) -> None:
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
                if self._sound is not None:
                    self._sound.finish()
            self._container.close()
        except (OSError, av.FFmpegError):
            if self.error is None:
                raise
        if self.error is not None:   # the video is not whole
            raise self.error

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


class _Sound:
    """The audio of an input video, copied (or re-encoded) into an output container
    from `start` seconds on, as far as the input frames that were written reach (at
    another --fps than the input's, the sound keeps its own speed)."""

    def __init__(self, source: VideoInput, start: float, copyable: set[str], encoder: str):
        self._frame_seconds = 1 / source.fps
        self._container = av.open(str(source.path), mode="r")
        self._input = self._container.streams.audio[0]
        self._copy = self._input.codec_context.name in copyable
        self._encoder = encoder
        self._start = start
        self._packets = self._container.demux(self._input)
        self._pending = None       # the packet read but not yet due
        self._output = None
        self._resampler = None

    def add_stream(self, container) -> None:
        if self._copy:
            self._output = container.add_stream_from_template(self._input)
        else:
            rate = self._input.codec_context.sample_rate
            rate = 48000 if self._encoder == "libopus" else rate
            self._output = container.add_stream(self._encoder, rate=rate)
            self._output.layout = self._input.codec_context.layout.name
            self._resampler = av.AudioResampler(format=self._output.format,
                                                layout=self._output.layout, rate=rate)
        self._target = container

    def copy_frames(self, count: int) -> None:
        """Write the input's audio as far as `count` frames from the start reach."""
        seconds = count * self._frame_seconds
        time_base = self._input.time_base
        offset = round(self._start / time_base) if self._start > 0 else 0
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.pts is None:       # the demuxer's end-of-stream marker
                continue
            if packet.pts * time_base < self._start:
                continue
            if (packet.pts - offset) * time_base >= seconds:
                self._pending = packet
                return
            self._write(packet, offset)

    def _write(self, packet, offset: int) -> None:
        if self._copy:
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = self._output
            self._target.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                self._target.mux(self._output.encode(resampled))

    def finish(self) -> None:
        """End the sound with the frames (what the input has beyond them is left out)."""
        if not self._copy:
            self._target.mux(self._output.encode(None))
        self._container.close()


class GifWriter:
    """An animated GIF, looping, each frame with its own adaptive palette. Pillow writes
    it at the end and keeps the frames until then (one byte per pixel each): GIFs are
    for short, small animations."""

    def __init__(self, file, fps: Fraction):
        self._file = file
        self._duration_ms = round(1000 / float(fps))
        self._frames: list[Image.Image] = []
        self.count = 0
        self.error = None   # Pillow writes the file at the end, where its errors come

    def write(self, rgb: np.ndarray) -> None:
        self._frames.append(Image.fromarray(eight_bits(rgb)).quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG))
        self.count += 1

    def finish(self) -> None:
        if self._frames:
            self._frames[0].save(self._file, format="GIF", save_all=True, loop=0,
                                 append_images=self._frames[1:], duration=self._duration_ms,
                                 optimize=False)

    def abandon(self) -> None:
        self._frames.clear()

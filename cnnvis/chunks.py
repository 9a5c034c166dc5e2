"""A dreamed video in chunks that run at once, in local worker processes or as the tasks of
a Ray cluster (--workers, --ray), or here one after the other (--chunk_frames alone): the
same frames, bit for bit, wherever each chunk ran.

Chunk c keeps `chunk_frames` frames. Each chunk after the first starts `warmup_frames`
frames early, with frame 1's whole size schedule, so that its dream has settled by its
first kept frame. Two independent dreams of one frame differ everywhere, so over those
warm-up frames the video cross-fades from the chunk before (which keeps them) to the new
chunk, with smoothstep weights: a seam then changes about as much from frame to frame as
the frames inside a chunk do (docs/algorithm.md, "Chunks").

A chunk runs as tasks of SEGMENT frames, one after the other, each continuing from the
last frame of the one before as --resume does: its frames come back as they are made, a
task whose worker died runs again (up to the pool's retries), and each frame made is
handed to the caller (`ChunkFrame`) to be kept, raw frames of the cross-fades included,
so that a run resumed from them continues exactly.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cnnvis.animation import SequencePlan, plan_video, stored_levels, video_dream_frames
from cnnvis.errors import UserError
from cnnvis.imageio import ImageInput
from cnnvis.model import VisModel
from cnnvis.pixels import MAX_LEVEL
from cnnvis.plan import check_model
from cnnvis.pools import RETRIES, WORKER_DIED, open_pool
from cnnvis.settings import CommandOptions, default
from cnnvis.zoo import ModelSpec, resolved_device

DEFAULT_CHUNK_FRAMES = 48   # where --workers or --ray run a video and --chunk_frames is not given
SEGMENT = 6   # frames of one task: what a Ctrl-C or a dead worker can cost a chunk
# The frames a chunk made before, by (frame number, chunk number), or None.
StoredChunkFrames = Callable[[int, "int | None"], "np.ndarray | None"]


@dataclass(frozen=True)
class ChunkFrame:
    """A frame of a video in chunks: `raw` (chunk `chunk`'s own dream of a cross-faded frame,
    kept so that a resumed run can continue from it) or what the video shows (made by chunk
    `chunk`, or 0: a cross-fade of two); `made` is False for a frame stored before (a
    cross-fade is made each time from its two raw frames)."""

    number: int
    chunk: int
    rgb: np.ndarray
    raw: bool
    made: bool = True


def crossfade_weight(number: int, kept: int, warmup: int) -> float:
    """The share of the chunk that keeps frames from `kept` on in its warm-up frame `number`
    (smoothstep, 0 and 1 left out: the frames on either side are one chunk's own)."""
    share = (number - (kept - warmup) + 1) / (warmup + 1)
    return (1 - math.cos(math.pi * share)) / 2


def crossfade(ending: np.ndarray, starting: np.ndarray, weight: float, depth: int) -> np.ndarray:
    """A frame `weight` of the way from the chunk before's (`ending`) to the new chunk's
    (`starting`), both stored at `depth` bits. (Each is its photo plus its dream: blending
    them blends the dreams.)"""
    levels = (1 - weight) * stored_levels(ending, depth) + weight * stored_levels(starting, depth)
    return np.rint(levels * (MAX_LEVEL[depth] / 255.0)).astype(ending.dtype)


def dream_video_chunks(video_frames: Iterable[tuple[int, np.ndarray]],
                       model: VisModel | ModelSpec, *, seed: int | None = None,
                       guide: ImageInput = None, mask: ImageInput = None,
                       depth: int = default("output_depth"), workers: int | None = None,
                       ray: str | None = None, ray_timeout: float = default("ray_timeout"),
                       stored: StoredChunkFrames | None = None, **options) -> Iterator[ChunkFrame]:
    """`cnnvis.dream_video` in chunks of `chunk_frames` (48 unless given) that run at once:
    yields its frames as they are made, not in order (`frames_in_order` puts the shown ones in
    order): each chunk's raw frames of its cross-fades, and every frame the video shows.

    `video_frames` are (number, uint8 RGB) with consecutive numbers; the keywords are
    `dream_video`'s and `run_jobs`' (`model`, `workers`, `ray`, `ray_timeout`).
    `stored(number, chunk)` gives the pixels of chunk `chunk`'s raw frame `number` (chunk
    None: the video's frame) made before, or None.
    """
    check_model(model, specs=True)
    loaded = isinstance(model, VisModel)
    planned = plan_video(video_frames, {"chunk_frames": DEFAULT_CHUNK_FRAMES, **options},
                         input_size=model.input_size if loaded else model.input_size(),
                         device=model.device if loaded else resolved_device(model.device),
                         seed=seed, guide=guide, mask=mask, depth=depth)
    if planned is None:
        return iter(())
    plan, video_frames = planned
    return chunked_frames(plan, model, video_frames, workers=workers, ray=ray,
                          ray_timeout=ray_timeout, stored=stored)


def chunked_frames(plan: SequencePlan, model: VisModel | ModelSpec,
                   video_frames: Iterable[tuple[int, np.ndarray]], *,
                   workers: int | None = None, ray: str | None = None,
                   ray_timeout: float = default("ray_timeout"),
                   stored: StoredChunkFrames | None = None) -> Iterator[ChunkFrame]:
    """`dream_video_chunks` of a planned sequence (`cnnvis.animation.plan_sequence`, with
    `chunk_frames`)."""
    CommandOptions(workers=workers, ray=ray, ray_timeout=ray_timeout)   # their values
    animation = plan.animation
    if animation.chunk_frames is None:
        raise ValueError("the plan has no chunk_frames")
    layout = _Layout(iter(video_frames), animation.chunk_frames, animation.warmup_frames)
    pool = open_pool(model, plan, _dream_segment, workers, ray, ray_timeout)
    return _Schedule(layout, pool, plan.depth, stored or (lambda number, chunk: None)).frames()


def frames_in_order(frames: Iterable[ChunkFrame], first: int = 1) -> Iterator[ChunkFrame]:
    """The frames a video shows, from frame `first` on, in order, from `dream_video_chunks`'
    (each kept in memory until the frames before it come)."""
    waiting: dict[int, ChunkFrame] = {}
    expected = first
    for frame in frames:
        if frame.raw:
            continue
        waiting[frame.number] = frame
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1


@dataclass(frozen=True)
class Chunk:
    """Chunk `number` (from 1) dreams frames `first` to `last` and keeps `kept` to `last`;
    those before `kept` are its warm-up. `followed`: whether a chunk comes after it (whose
    warm-up its last frames are)."""

    number: int
    first: int
    kept: int
    last: int
    followed: bool


class _Layout:
    """Cuts the video's frames, read once and in order, into chunks as they are asked for."""

    def __init__(self, frames: Iterator[tuple[int, np.ndarray]], chunk_frames: int,
                 warmup_frames: int):
        self.frames, self.length, self.warmup = frames, chunk_frames, warmup_frames
        self.ahead = next(self.frames, None)   # the next frame, to know whether one comes
        self.carried: dict[int, np.ndarray] = {}   # the chunk before's last frames
        self.count = 0

    def next_chunk(self) -> tuple[Chunk, dict[int, np.ndarray]] | None:
        if self.ahead is None:
            return None
        photos = dict(self.carried)
        kept = self.ahead[0]
        while self.ahead is not None and len(photos) < len(self.carried) + self.length:
            number, photo = self.ahead
            due = kept + len(photos) - len(self.carried)
            if number != due:
                raise ValueError(f"video frames are numbered one after the other: frame "
                                 f"{number} came where frame {due} was due")
            photos[number] = photo
            self.ahead = next(self.frames, None)
        self.count += 1
        numbers = sorted(photos)
        self.carried = {number: photos[number] for number in numbers[len(numbers) - self.warmup:]
                        } if self.warmup else {}
        return Chunk(self.count, numbers[0], kept, numbers[-1], self.ahead is not None), photos


@dataclass
class _ChunkRun:
    """A chunk on its way: its photos, the next frame it dreams and the frame before that
    (number, photo, pixels)."""

    chunk: Chunk
    photos: dict[int, np.ndarray]
    next: int
    previous: tuple[int, np.ndarray, np.ndarray] | None = None
    running: bool = False
    tries: int = 0


@dataclass(frozen=True)
class _Segment:
    """A task: frames `numbers` of a chunk, continuing from `previous` (None: from the
    chunk's first frame, dreamed as frame 1 is)."""

    numbers: tuple[int, ...]
    previous: tuple[int, np.ndarray, np.ndarray] | None


class _Schedule:
    """Runs the chunks, at most one task of each at a time and as many chunks at a time as
    the pool has slots, and pairs up the raw frames of each cross-fade."""

    def __init__(self, layout: _Layout, pool, depth: int, stored: StoredChunkFrames):
        self.layout, self.pool, self.depth, self.stored = layout, pool, depth, stored
        self.halves: dict[int, tuple[int, np.ndarray]] = {}   # a cross-fade's first raw frame

    def frames(self) -> Iterator[ChunkFrame]:
        runs: list[_ChunkRun] = []
        handles: dict = {}
        try:
            while True:
                while len(runs) < self.pool.slots and (opened := self.layout.next_chunk()):
                    run = _ChunkRun(*opened, next=opened[0].first)
                    yield from self._resumed(run)
                    if run.next <= run.chunk.last:   # not stored whole before
                        runs.append(run)
                for run in runs:
                    if not run.running and run.next <= run.chunk.last:
                        numbers = tuple(range(run.next, min(run.next + SEGMENT, run.chunk.last + 1)))
                        segment = _Segment(numbers, run.previous)
                        handles[self.pool.submit(segment, [run.photos[n] for n in numbers])] = (run, segment)
                        run.running = True
                if not handles:   # every chunk is done
                    return
                for handle, outcome in self.pool.wait(list(handles)):
                    run, segment = handles.pop(handle)
                    run.running = False
                    if outcome is WORKER_DIED:
                        run.tries += 1
                        if run.tries > self.pool.retries:
                            raise UserError(f"chunk {run.chunk.number}: {WORKER_DIED}, "
                                            f"{RETRIES + 1} times")
                        continue
                    if isinstance(outcome, str):   # its frames stopped being finite, say
                        raise UserError(outcome)
                    run.tries = 0
                    for number, rgb in zip(segment.numbers, outcome):
                        yield from self._arrived(run, number, rgb, made=True)
                runs = [run for run in runs if run.running or run.next <= run.chunk.last]
        finally:
            self.pool.close()

    def _resumed(self, run: _ChunkRun) -> Iterator[ChunkFrame]:
        """The chunk's frames stored before, from its first on, up to the first missing."""
        while run.next <= run.chunk.last:
            rgb = self.stored(run.next, run.chunk.number if self._crossfaded(run.chunk, run.next)
                              else None)
            if rgb is None:
                return
            yield from self._arrived(run, run.next, rgb, made=False)

    def _crossfaded(self, chunk: Chunk, number: int) -> bool:
        """Whether frame `number` of `chunk` is one of a cross-fade's two."""
        return number < chunk.kept or (chunk.followed and number > chunk.last - self.layout.warmup)

    def _arrived(self, run: _ChunkRun, number: int, rgb: np.ndarray,
                 made: bool) -> Iterator[ChunkFrame]:
        chunk = run.chunk
        run.previous, run.next = (number, run.photos.pop(number), rgb), number + 1
        if not self._crossfaded(chunk, number):
            yield ChunkFrame(number, chunk.number, rgb, raw=False, made=made)
            return
        yield ChunkFrame(number, chunk.number, rgb, raw=True, made=made)
        other = self.halves.pop(number, None)
        if other is None:
            self.halves[number] = (chunk.number, rgb)
            return
        (_, ending), (_, starting) = sorted([other, (chunk.number, rgb)], key=lambda half: half[0])
        kept = chunk.kept if number < chunk.kept else chunk.last + 1
        weight = crossfade_weight(number, kept, self.layout.warmup)
        yield ChunkFrame(number, 0, crossfade(ending, starting, weight, self.depth), raw=False)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """PyTorch on one CPU thread, as it was after. PyTorch's CPU sums depend on the number of
    threads, and RMSProp's first steps (of about the size of the learning rate, whatever
    the gradient's) carry a difference in the last bit into the picture: a 640x360 frame of
    efficientnet_lite0 differs by 25 grey levels on average between 1 and 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dream_segment(model: VisModel, plan: SequencePlan, segment: _Segment,
                   photos: list[np.ndarray]) -> list[np.ndarray] | str:
    """A task: the segment's frames, or why they could not be made; on one CPU thread,
    so that they are the same wherever the task runs."""
    frames = list(zip(segment.numbers, photos))
    stored = None
    if segment.previous is not None:
        number, photo, rgb = segment.previous
        frames.insert(0, (number, photo))
        stored = {number: rgb}.get
    try:
        with _one_thread():
            made = [frame.rgb for frame in video_dream_frames(plan, model, frames, stored=stored)]
    except UserError as error:   # also NonFiniteImage
        return str(error)
    return made[1:] if segment.previous is not None else made

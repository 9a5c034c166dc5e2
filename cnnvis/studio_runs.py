"""The studio's work behind the page (`cnnvis.studio`): each browser session's folder and
history, the checks of an upload, and one picture's run with its previews, made through the
public API (`cnnvis.load_model`, `cnnvis.render`) as a script would make it.

A session is named by a key that the studio issued and the browser keeps (so it outlives a
refresh), or else by Gradio's session hash (a client of the HTTP API); its folder is a hash
of that, inside the studio's own temporary folder, so no name that a request gives becomes
a path. Gradio keeps uploads and the files it serves in the folder's `uploads/`; the
sessions' own pictures, in `sessions/`, are never served themselves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import cnnvis
from cnnvis.errors import Interrupted, UserError
from cnnvis.files import MiB, open_input
from cnnvis.imageio import load_rgb, save_picture
from cnnvis.recipes import recipe_options
from cnnvis.recording import option_argv, recorded_text
from cnnvis.settings import CommandOptions, DreamOptions, check_seed, option_settings

# What the page shows in view; every other option of a picture is in the advanced panel.
MAIN_OPTIONS = ("num_steps", "output_iter", "learning_rate", "p_reg", "tv_reg")
ADVANCED_OPTIONS = tuple(f.name for f, _ in option_settings(DreamOptions)
                         if f.name not in (*MAIN_OPTIONS, "target_layer"))
# A preview every few steps: the table's output_iter (50) suits a console, not a page.
PREVIEW_EVERY = 5


@dataclass(frozen=True)
class Result:
    """One picture of a session's history."""

    number: int
    png: Path
    caption: str
    command: str            # the equivalent command line
    settings: str           # the options that made it, as JSON


@dataclass
class Session:
    """A browser session's folder and history, its running run's stop, and the tickets of
    its runs still waiting in the queue (those Stop cancelled among them)."""

    folder: Path
    results: list[Result] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    waiting: set[int] = field(default_factory=set)
    cancelled: set[int] = field(default_factory=set)
    _tickets: Iterator[int] = field(default_factory=itertools.count)

    def take_ticket(self) -> int:
        """A run's ticket, taken when it is asked for, before it waits in the queue."""
        ticket = next(self._tickets)
        self.waiting.add(ticket)
        return ticket

    def stop_runs(self) -> None:
        """Stop: the running run at its next step, and the waiting ones before they start."""
        self.stop.set()
        self.cancelled |= self.waiting

    def begin(self, ticket: int | None) -> bool:
        """Whether the run of `ticket` (None: one asked for through the API, without one)
        is to start now that it leaves the queue: not when Stop cancelled it."""
        self.waiting.discard(ticket)
        if ticket in self.cancelled:
            self.cancelled.discard(ticket)
            return False
        self.stop.clear()
        return True


class Studio:
    """The sessions, the loaded models and the run counter of one studio process."""

    def __init__(self, root: Path, max_upload_mb: float, max_upload_megapixels: float,
                 max_upload_seconds: float, gpu: int):
        self.root = root
        self.uploads = root / "uploads"   # Gradio's cache: uploads, and what it serves
        self.max_bytes = int(max_upload_mb * MiB)
        self.max_pixels = int(max_upload_megapixels * 1e6)
        self.max_seconds = max_upload_seconds
        self.device = "cpu" if gpu < 0 else None   # None: the GPU when there is one
        self._sessions: dict[str, Session] = {}
        self._keys: set[str] = set()
        self._models: dict[str, cnnvis.VisModel] = {}
        self._lock = threading.Lock()
        self._runs = 0

    def issue_key(self) -> str:
        """A new session's key, for the browser to keep (a secret: it names the session)."""
        key = secrets.token_urlsafe(24)
        with self._lock:
            self._keys.add(key)
        return key

    def issued(self, key: object) -> bool:
        return isinstance(key, str) and key in self._keys

    def session(self, key: str) -> Session:
        """The session of `key`: a key this studio issued, or Gradio's session hash."""
        folder_name = hashlib.sha256(key.encode()).hexdigest()[:32]
        with self._lock:
            if folder_name not in self._sessions:
                folder = self.root / "sessions" / folder_name
                folder.mkdir(parents=True, exist_ok=True)
                self._sessions[folder_name] = Session(folder)
            return self._sessions[folder_name]

    def model(self, name: str) -> cnnvis.VisModel:
        with self._lock:
            if name not in self._models:
                self._models[name] = cnnvis.load_model(name, device=self.device)
            return self._models[name]

    def photo(self, path: str | None) -> np.ndarray | None:
        """The uploaded photo at `path` (a file of Gradio's upload folder), checked as the
        command line checks --initial_image, and against the studio's upload limits."""
        if path is None:
            return None
        self.check_upload(path, "photo")
        with open_input(path, "image", "the photo") as file:
            try:
                with Image.open(file) as image:
                    width, height = image.size
            except Exception:  # noqa: BLE001 - load_rgb below says what is wrong with the file
                width = height = 0
        self.check_pixels(width, height, "photo")
        with named_as_uploaded(path):
            return load_rgb(path, "the photo")

    def check_upload(self, path: str, what: str) -> None:
        """Refuse a file that was not uploaded to this studio, or one over --max_upload_mb."""
        if not Path(path).resolve().is_relative_to(self.uploads.resolve()):
            raise UserError(f"the {what} is not a file uploaded to this studio; upload it again.")
        size = Path(path).stat().st_size
        if size > self.max_bytes:
            raise UserError(f"the {what} is {size / MiB:.1f} MB, more than this studio takes "
                            f"({self.max_bytes / MiB:.1f} MB, --max_upload_mb); upload a "
                            "smaller file.")

    def check_pixels(self, width: int, height: int, what: str) -> None:
        if width * height > self.max_pixels:
            raise UserError(f"the {what} has {width}x{height} pixels, more than this studio "
                            f"takes ({self.max_pixels / 1e6:g} million, "
                            "--max_upload_megapixels); downscale it first.")

    def next_run(self) -> int:
        with self._lock:
            self._runs += 1
            return self._runs


@contextlib.contextmanager
def named_as_uploaded(path: str, words: dict[str, str] | None = None) -> Iterator[None]:
    """A UserError naming the uploaded file at `path` names it as the user knows it, not by
    the studio's folder; `words`: the command line's words in it, and the studio's."""
    try:
        yield
    except UserError as error:
        text = str(error).replace(path, Path(path).name)
        for command_line, studio in (words or {}).items():
            text = text.replace(command_line, studio)
        raise UserError(text) from None


@dataclass(frozen=True)
class Done:
    """What the work of `in_worker` returned."""

    value: object


def in_worker(work: Callable[[Callable[[object], None]], object], name: str,
              stop: threading.Event) -> Iterator[object]:
    """`work(put)` in a thread of its own, while the page's thread shows its progress: yields
    what it puts, None when half a second passes without anything, and last `Done` with
    what it returns; what it raises is raised here. Closed early (a page closed mid-run),
    it sets `stop` and waits for the work to end: the device takes one run at a time."""
    updates: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            updates.put(Done(work(updates.put)))
        except BaseException as error:  # noqa: BLE001 - handed to the page's thread, raised there
            updates.put(error)

    worker = threading.Thread(target=run, daemon=True, name=name)
    worker.start()
    try:
        while True:
            try:
                item = updates.get(timeout=0.5)
            except queue.Empty:
                yield None
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Done):
                return
    finally:
        stop.set()
        worker.join()


def recipe_values(recipe: str | None, model: str) -> dict[str, object]:
    """Every picture option's value with recipe `recipe` (None: the table's defaults) for
    preset `model`, as the page shows them."""
    values = {f.name: f.default for f, _ in option_settings(DreamOptions)}
    if recipe:
        chosen = recipe_options(recipe, model)
        values.update({name: value for name, value in chosen.items() if name in values})
    return values


def equivalent_command(model: str, seed: int, photo_name: str | None, depth: int,
                       options: DreamOptions) -> list[str]:
    """The command line's options that make the same picture."""
    command = CommandOptions(model=model, seed=seed, initial_image=photo_name, output_depth=depth,
                             output_file="dream.png")
    return option_argv(command, options)


@dataclass(frozen=True)
class Update:
    """What the page shows while a run goes on: the latest preview, the progress, the result."""

    preview: np.ndarray | None
    progress: str
    result: Result | None = None


def run_picture(studio: Studio, session: Session, photo_path: str | None, model_name: str,
                seed: int | None, depth: int, values: dict[str, object]) -> Iterator[Update]:
    """Dream one picture for `session`, yielding a preview every `output_iter` steps and the
    progress in between; the last update holds the result, saved in the session's folder.
    `session.stop` ends the run at the next step with the picture as it is."""
    photo = studio.photo(photo_path)
    options = DreamOptions.from_keywords(values)
    seed = check_seed(seed)
    model = studio.model(model_name)
    number = studio.next_run()
    print(f"cnn-vis studio: run {number} for session {session.folder.name} started", flush=True)
    steps = Steps(session)
    started = time.monotonic()

    def work(put) -> cnnvis.Picture:
        return cnnvis.render(photo, model, seed=seed, callback=lambda report: put(
            report.picture.rgb()), progress=steps, **dataclasses.asdict(options))

    total = options.num_steps * options.num_sizes
    picture, stopped = None, False
    try:
        with contextlib.closing(in_worker(work, f"studio-run-{number}", session.stop)) as items:
            for item in items:
                if isinstance(item, Done):
                    picture = item.value
                else:
                    yield Update(item, _progress_text(steps.count, total, started))
    except Interrupted as stop:
        picture, stopped = stop.picture, True
    if picture is None:
        raise UserError("the run was stopped before its first step; run it again.")
    note = f"stopped at step {steps.count} of {total}" if stopped else f"{total} steps"
    result = _save(session, number, picture, model, photo_path, depth, options, note)
    yield Update(picture.rgb(), f"{note}, in {time.monotonic() - started:.0f} s", result)


class Steps:
    """The `progress` callback of a run: counts its steps, and ends it (`Interrupted`) at
    the first step after the session's Stop."""

    def __init__(self, session: Session):
        self.session, self.count = session, 0

    def __call__(self, size_index: int, step: int) -> None:
        self.count += 1
        if self.session.stop.is_set():
            raise Interrupted()


def _progress_text(steps: int, total: int, started: float) -> str:
    if steps == 0:
        return f"step 0 of {total}"
    left = (time.monotonic() - started) / steps * (total - steps)
    return f"step {steps} of {total}, about {left:.0f} s left"


def _save(session: Session, number: int, picture: cnnvis.Picture, model: cnnvis.VisModel,
          photo_path: str | None, depth: int, options: DreamOptions, note: str) -> Result:
    """The picture as a PNG in the session's folder, with the command that makes it again."""
    photo_name = Path(photo_path).name if photo_path else None   # the name the user knows
    argv = equivalent_command(model.name, picture.seed, photo_name, depth, options)
    png = session.folder / f"picture-{number}.png"
    save_picture(png, picture.rgb(depth), recorded_text(model.name, picture.seed, argv, True))
    settings = {"model": model.name, "seed": picture.seed, "output_depth": depth,
                **dataclasses.asdict(options)}
    result = Result(number, png, f"#{number} {model.name}, seed {picture.seed}, {note}",
                    " ".join(["python cnn_vis.py", *argv]),
                    json.dumps(settings, indent=1))
    session.results.append(result)
    return result


def run_atlas(studio: Studio, session: Session, model_name: str, neurons: str,
              seed: int | None, values: dict[str, object]) -> Iterator[tuple[list, str]]:
    """Pictures of the target layer's `neurons` ("0-7", "all"; `cnnvis.atlas`), each from
    noise and saved in the session's folder as it finishes: yields the grid so far and the
    progress. `session.stop` ends it after the neuron being made."""
    options = DreamOptions.from_keywords(values)
    model = studio.model(model_name)
    number = studio.next_run()
    print(f"cnn-vis studio: run {number} (an atlas) for session {session.folder.name} started",
          flush=True)
    folder = session.folder / f"atlas-{number}"
    folder.mkdir()
    started, grid = time.monotonic(), []
    results = cnnvis.atlas(None, model, neurons=neurons, seed=check_seed(seed),
                           **dataclasses.asdict(options))
    try:
        for result in results:
            if result.error is not None:
                raise UserError(f"{result.job.name}: {result.error}")
            neuron = result.job.options["target_neuron"]
            argv = equivalent_command(model.name, result.job.seed, None, 8, dataclasses.replace(
                options, target_neuron=neuron))
            png = folder / f"neuron-{neuron}.png"
            save_picture(png, result.rgb, recorded_text(model.name, result.job.seed, argv, True))
            grid.append((str(png), f"neuron {neuron}, seed {result.job.seed}"))
            stopped = session.stop.is_set()
            yield grid, (f"{'stopped after ' if stopped else ''}{len(grid)} neurons, in "
                         f"{time.monotonic() - started:.0f} s")
            if stopped:
                return
    finally:
        results.close()

"""What the user sees during a run: progress bar, `print` lines, saved, shown and plotted images.

The only module that imports matplotlib. Where there is no display, `show` and
`plot_pix` write their figure as a PNG beside the output instead (and say so once).
"""
from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cnnvis.errors import UserError
from cnnvis.imageio import atomic_write, intermediate_path, save_picture, sibling_path
from cnnvis.optimizer import Report
from cnnvis.settings import ACTIONS, DreamOptions

# Pixels whose values `plot_pix` follows, as fractions of the height and width, so that they
# stay the same pixels of the picture when the image grows.
TRACKED_PIXELS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def progress_bar(total: int | None, unit: str) -> tqdm:
    """A bar of `total` `unit`s with the time left, shown only on a terminal (in a log file it
    would be a wall of updates)."""
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


class ConsoleObserver:
    """Carries out the `--iter_behavior` actions every `output_iter` steps, with a progress bar.

    An action that fails (a full disk, a file name too long for its step number, a display
    that cannot be used) is reported once and dropped: it never stops the run that makes
    the image.
    """

    def __init__(self, actions: list[str], output_file: Path, depth: int, png_text: dict[str, str],
                 total: int | None, show_size: tuple[float, float] = (5.0, 5.0),
                 frames_folder: Path | None = None):
        """`total` steps, or with `frames_folder` (a sequence's) frames, for the progress bar;
        a frame's intermediate images go into `frames_folder`."""
        self.actions = actions
        self.output_file = Path(output_file)
        self.depth = depth
        self.png_text = png_text
        self.show_size = show_size
        self.frames_folder = frames_folder
        self.bar = progress_bar(total, "step" if frames_folder is None else "frame")
        self.pixel_history: list[np.ndarray] = []   # one (4, 3) array of values per report
        self._figures: dict[str, object] = {}
        self._said_no_display = False
        self._interactive: bool | None = None   # known once a figure is first needed

    def step_done(self, size_index: int, step: int) -> None:
        self.bar.set_description(f"size {size_index}", refresh=False)
        self.bar.update(1)

    def frame_done(self, number: int) -> None:
        self.bar.set_description(f"frame {number}", refresh=False)
        self.bar.update(1)

    def report(self, report: Report) -> None:
        actions = {
            "print": lambda: self.bar.write(format_report(report), file=sys.stderr),
            "save": lambda: save_picture(self._intermediate_path(report),
                                     report.picture.rgb(self.depth), self.png_text),
            "plot_pix": lambda: self._plot_pixels_of(report),
            "show": lambda: self._draw("show", partial(_show_image, rgb=report.picture.rgb(),
                                                       report=report)),
        }
        for action in list(self.actions):
            try:
                actions[action]()
            except Exception as error:  # noqa: BLE001 - no report is worth the image
                self.actions.remove(action)
                reason = error if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
                self.bar.write(f"cnn-vis: '{action}' failed and is off for the rest of the run "
                               f"({reason}).", file=sys.stderr)

    def _intermediate_path(self, report: Report) -> Path:
        if report.frame is None:
            return intermediate_path(self.output_file, report.size_index, report.step)
        return self.frames_folder / f"{report.frame:06d}_{report.size_index}_{report.step}.png"

    def _plot_pixels_of(self, report: Report) -> None:
        self.pixel_history.append(tracked_pixel_values(report.picture.image))
        self._draw("pix", self._plot_pixels)

    def close(self) -> None:
        self.bar.close()

    def _draw(self, kind: str, paint) -> None:
        plt = self._pyplot()
        figure = self._figures.get(kind)
        if figure is None:
            figure = self._figures[kind] = plt.figure(figsize=self.show_size)
        figure.clf()
        paint(figure)
        if self._interactive:
            plt.pause(0.001)  # draw without blocking the optimisation
            return
        path = sibling_path(self.output_file, kind)
        with atomic_write(path) as file:
            figure.savefig(file, format="png")
        if not self._said_no_display:
            self.bar.write(f"No display: figures are written to {sibling_path(self.output_file, '*')} "
                           "instead of shown.", file=sys.stderr)
            self._said_no_display = True

    def _pyplot(self):
        """matplotlib's pyplot, with a window where one can really be opened, else Agg (files).

        A DISPLAY that is set but unusable makes matplotlib fall back to Agg, or fail when
        the first window opens: either way the figures go to files.
        """
        import matplotlib
        if not has_display():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        if self._interactive is None:
            try:
                probe = plt.figure()
                # Non-interactive canvases (Agg and the file formats) need no GUI framework.
                self._interactive = probe.canvas.required_interactive_framework is not None
                plt.close(probe)
            except Exception:  # noqa: BLE001 - any backend's way to say "no display"
                self._interactive = False
            if not self._interactive:
                plt.switch_backend("Agg")
        return plt

    def _plot_pixels(self, figure) -> None:
        history = np.stack(self.pixel_history)   # (reports, 4, 3)
        axes = figure.add_subplot(1, 1, 1)
        for p, (fy, fx) in enumerate(TRACKED_PIXELS):
            for c, colour in enumerate("bgr"):
                axes.plot(history[:, p, c], color=colour, alpha=0.4 + 0.15 * p,
                          label=f"({fy:g}H, {fx:g}W) {colour.upper()}")
        axes.set_xlabel("report")
        axes.set_ylabel("pixel value minus mean colour")
        axes.legend(fontsize="x-small", ncol=2)


def _show_image(figure, *, rgb: np.ndarray, report: Report) -> None:
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(rgb)
    axes.set_axis_off()
    axes.set_title(f"size {report.size_index}/{report.num_sizes}, step {report.step}")


def tracked_pixel_values(image) -> np.ndarray:
    """The values (4, 3) of the TRACKED_PIXELS of an image (1, 3, H, W)."""
    height, width = image.shape[-2:]
    return np.array([image[0, :, int(fy * height), int(fx * width)].tolist()
                     for fy, fx in TRACKED_PIXELS])


def format_report(report: Report) -> str:
    """One compact line: step, size, losses, mean |gradient| of each term, step and image statistics."""
    image = report.picture.image
    height, width = image.shape[-2:]
    gradients = " ".join(f"{name}={value:.3g}" for name, value in report.mean_gradients.items())
    frame = "" if report.frame is None else f"frame {report.frame} "
    return (f"{frame}size {report.size_index}/{report.num_sizes} {height}x{width} step {report.step}: "
            f"objective={report.objective:.4g} p_loss={report.p_loss:.4g} tv_loss={report.tv_loss:.4g} | "
            f"|grad| {gradients} | step mean={report.step_mean:.3g} median={report.step_median:.3g} | "
            f"image mean={float(image.mean()):.3g} std={float(image.std()):.3g}")


def parse_actions(text: str) -> list[str]:
    """The actions of --iter_behavior's `text` ('save+print')."""
    actions = [a for a in text.split("+") if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise UserError(f"--iter_behavior '{text}' has unknown action(s) {', '.join(unknown)}; "
                        f"join any of {', '.join(ACTIONS)} with '+', e.g. save+print.")
    return actions


def describe_dream(options: DreamOptions, guide: str | None, mask: str | None) -> str:
    """The print line that opens a run: what is amplified, and the controls beyond 2015."""
    layers = options.target_layer or "the model's default layer"
    parts = [f"{options.image_type} of {layers}"]
    for text, given in ((f"weights {options.layer_weights}", options.layer_weights),
                        (f"channels {options.channels}", options.channels),
                        (f"guide {guide}", guide), (f"mask {mask}", mask),
                        (f"jitter {options.jitter} px", options.jitter),
                        ("the photo's colours kept", options.preserve_colors)):
        if given:
            parts.append(text)
    return "cnn-vis: " + "; ".join(parts)

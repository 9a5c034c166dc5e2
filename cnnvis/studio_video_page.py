"""The studio page's video tab (`cnnvis.studio_page`): an uploaded clip dreamed frame by
frame, or a zoom into the picture tab's photo, with the picture tab's model, recipe, layer,
seed and options; the frames shown as they are made, and the video (with the clip's
sound) to watch and download.
"""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from cnnvis.errors import UserError
from cnnvis.studio_controls import option_component, option_value, video_upload
from cnnvis.studio_runs import Studio
from cnnvis.studio_video import VIDEO_OPTIONS, ZOOM_OPTIONS, run_video

CLIP, ZOOM = "the uploaded clip, dreamed", "a zoom into the picture tab's photo"
SHOWN = tuple(dict.fromkeys((*ZOOM_OPTIONS, *VIDEO_OPTIONS)))
# Where the table's default makes no zoom to see (one frame, no zoom) or has no control
# (frame_steps None: --num_steps, which a later frame, begun from the one before, needs not).
PAGE_DEFAULTS = {"frames": 12, "zoom": 1.05, "frame_steps": 10}
WAITED = "stopped while it waited in the queue"


def video_tab(studio: Studio, queued: Callable, stops: Callable, session_of: Callable,
              picture: list, panel: list, picture_values: Callable[[list], dict]) -> None:
    """The tab, its run asked for with `queued` and stopped by a button of `stops` (the
    page's); `picture` are the picture tab's photo, model, layer, seed and depth, `panel`
    its options, whose values `picture_values` reads."""
    with gr.Tab("Video"):
        gr.Markdown("Dream a short clip frame by frame (its sound goes along), or zoom into "
                    "the picture tab's photo (empty: noise), with the picture tab's model, "
                    "recipe, layer, seed and options. Stop keeps the frames made so far, and "
                    "the video of them.")
        with gr.Row():
            with gr.Column():
                source = gr.Radio([CLIP, ZOOM], value=CLIP, label="make", elem_id="video-source")
                clip = video_upload(label="clip (a short video: MP4, WebM, MOV, AVI)",
                                    elem_id="clip")
                animation = [option_component(name, "video") for name in SHOWN]
                for name, control in zip(SHOWN, animation):
                    control.value = PAGE_DEFAULTS.get(name, control.value)
                    control.visible = name in VIDEO_OPTIONS   # the clip's, chosen at first
                with gr.Row():
                    start = gr.Button("Make the video", variant="primary", elem_id="make-video")
                    stop = gr.Button("Stop", variant="stop", elem_id="video-stop")
            with gr.Column():
                progress = gr.Markdown(elem_id="video-progress")
                frames = gr.Gallery(label="frames, as they are made", columns=6, height=240,
                                    fit_columns=False, allow_preview=False,
                                    elem_id="video-made")
                video = gr.Video(label="video", interactive=False, elem_id="video")
                download = gr.DownloadButton("Download the video", elem_id="video-download")
                command = gr.Code(label="equivalent command line", language="shell",
                                  elem_id="video-command")

    def make_video(source_name, clip_path, photo_path, model_name, layer_name, seed_value,
                   output_depth, request: gr.Request, *shown):
        *shown, key_value, ticket_value = shown
        session = session_of(key_value, request)
        if not session.begin(ticket_value):
            yield gr.skip(), WAITED, *(gr.skip(),) * 3
            return
        zoom = source_name == ZOOM
        chosen = {name: option_value(name, value) for name, value in zip(SHOWN, shown)
                  if name in (ZOOM_OPTIONS if zoom else VIDEO_OPTIONS)}
        values = picture_values(shown[len(SHOWN):])
        values["target_layer"] = layer_name or None
        try:
            for update in run_video(studio, session, clip_path, photo_path, zoom, model_name,
                                    None if seed_value is None else int(seed_value),
                                    int(output_depth), values, chosen):
                made = str(update.video) if update.video else gr.skip()
                yield (update.frames, update.progress, made, made,
                       update.command or gr.skip())
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def show_controls(source_name):
        """The clip's upload and the options of the kind of video chosen, the others hidden."""
        chosen = ZOOM_OPTIONS if source_name == ZOOM else VIDEO_OPTIONS
        return (gr.update(visible=source_name == CLIP),
                *(gr.update(visible=name in chosen) for name in SHOWN))

    source.change(show_controls, [source], [clip, *animation])
    queued(start, make_video, [source, clip, *picture, *animation, *panel],
           [frames, progress, video, download, command], "video")
    stops(stop)

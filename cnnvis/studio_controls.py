"""The studio page's controls (`cnnvis.studio_page`): uploads that take files and nothing
else, an option's control made from the option table, and the layer picker, with the
layer gallery's pictures where the gallery was made before.
"""
from __future__ import annotations

import gradio as gr
from gradio_client.utils import is_http_url_like
from PIL import Image

import cnnvis
from cnnvis.gallery import any_cached, cached_layer_pictures
from cnnvis.settings import AnimationOptions, DreamOptions, option_settings
from cnnvis.studio_runs import Studio
from cnnvis.workflows import layer_notes

SETTINGS = {f.name: (f, setting) for cls in (DreamOptions, AnimationOptions)
            for f, setting in option_settings(cls)}
OWN_LAYER = ("the model's own (or the recipe's)", "")
NOT_AN_UPLOAD = "the studio takes files uploaded to it, not addresses; upload the file itself."
THUMBNAIL = (96, 96)


def uploads_only(upload):
    """Gradio's file input `upload`, handing over the path of a file uploaded to this studio
    unread (the studio checks it as the command line checks files) and taking nothing
    else: as it comes, it would also fetch an address, or decode the file before the
    studio's limits apply. (Its methods are replaced, not overridden: Gradio writes a .pyi
    file beside the module of a subclass of its components.)"""
    move_to_cache = upload.async_move_resource_to_block_cache

    async def uploaded_only(url_or_file_path):
        if is_http_url_like(str(url_or_file_path)):
            raise gr.Error(NOT_AN_UPLOAD, print_exception=False)
        return await move_to_cache(url_or_file_path)

    def path_only(payload) -> str | None:
        if payload is not None and payload.path is None:
            raise gr.Error(NOT_AN_UPLOAD, print_exception=False)
        return None if payload is None else payload.path

    upload.async_move_resource_to_block_cache = uploaded_only
    upload.preprocess = path_only
    return upload


def photo_upload(**shown) -> gr.Image:
    return uploads_only(gr.Image(type="filepath", sources=["upload"], image_mode=None, **shown))


def video_upload(**shown) -> gr.File:
    """A clip's upload: a plain file, which the studio opens as the command line opens
    --input_video (Gradio's video input would convert it with FFmpeg first)."""
    return uploads_only(gr.File(type="filepath", file_count="single", **shown))


def option_component(name: str, tab: str = "option"):
    """The control of picture or animation option `name`, as the option table describes it."""
    f, setting = SETTINGS[name]
    shown = {"label": name, "info": setting.help, "elem_id": f"{tab}-{name}"}
    if setting.kind is bool:
        return gr.Checkbox(value=f.default, **shown)
    if setting.choices:
        return gr.Dropdown(list(setting.choices), value=f.default, **shown)
    if setting.kind in (int, float):
        return gr.Number(value=f.default, minimum=setting.minimum, maximum=setting.maximum,
                         precision=0 if setting.kind is int else None, **shown)
    return gr.Textbox(value=f.default or "", **shown)


def option_value(name: str, shown):
    """The value of option `name` from its control (the table's default when empty); the
    options classes check it as the command line does."""
    f, setting = SETTINGS[name]
    if shown is None or shown == "":
        return f.default
    if setting.kind is int and isinstance(shown, float) and shown.is_integer():
        return int(shown)
    return shown


def layer_choices(model: str) -> list[tuple[str, str]]:
    """The target layers of preset `model`, each with what amplifying it looks like."""
    notes = layer_notes(model)
    return [OWN_LAYER, *((f"{name}: {notes[name]}" if notes.get(name) else name, name)
                         for name, _ in cnnvis.list_layers(model))]


def layer_pictures(studio: Studio, model: str) -> list[tuple[Image.Image, str]]:
    """The layer gallery's pictures of `model`'s layers (amplified on its photo), captioned
    with the layers' names, where the gallery was made before (`--layer_gallery`); none
    where it was not: making it takes minutes. Only a model whose weights are here loads."""
    present = {name for name, _, here, _ in cnnvis.list_models() if here}
    if model not in present or not any_cached(model):
        return []
    pictures = []
    for layer, path in cached_layer_pictures(studio.model(model)).items():
        with Image.open(path) as picture:
            picture.thumbnail(THUMBNAIL)
            pictures.append((picture.convert("RGB"), layer))
    return pictures


def layer_gallery_update(studio: Studio, model: str) -> gr.Gallery:
    pictures = layer_pictures(studio, model)
    return gr.Gallery(value=pictures, visible=bool(pictures))


def picked_layer(model: str, event: gr.SelectData) -> str:
    """The layer of the layer gallery's picture that was chosen: one of the model's."""
    caption = event.value.get("caption") if isinstance(event.value, dict) else None
    if caption not in {name for name, _ in cnnvis.list_layers(model)}:
        raise gr.Error("no such layer in this model; choose one from the list.")
    return caption

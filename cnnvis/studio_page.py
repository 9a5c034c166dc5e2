"""The studio's page (Gradio Blocks): the picture tab, with the main controls in view and
every other picture option in an advanced panel made from the option table (names, ranges,
defaults and help from `cnnvis.settings`), the layer gallery's pictures, the live preview,
Stop, and the session's history; the atlas tab, a layer's neurons filled in as they are
made; and the video tab (`cnnvis.studio_video_page`). Runs wait in one queue per device,
each with a ticket taken as it is asked for, so that Stop cancels it while it waits.
"""
from __future__ import annotations

import json

import gradio as gr

import cnnvis
from cnnvis.errors import UserError
from cnnvis.settings import OUTPUT_DEPTHS, default
from cnnvis.studio_controls import (SETTINGS, layer_choices, layer_gallery_update,
                                    option_component, option_value, photo_upload, picked_layer)
from cnnvis.studio_runs import (ADVANCED_OPTIONS, MAIN_OPTIONS, PREVIEW_EVERY, Studio,
                                recipe_values, run_atlas, run_picture)
from cnnvis.studio_video_page import video_tab
from cnnvis.workflows import list_recipes

PANEL_OPTIONS = (*MAIN_OPTIONS, *ADVANCED_OPTIONS)
NO_RECIPE = "(none)"
ATLAS_RECIPE = "neuron"
STUDIO_MODEL = "efficientnet_lite0"   # offline: its weights come with a Python package
WAITED = "stopped while it waited in the queue"


def build(studio: Studio) -> gr.Blocks:
    """The studio's page, serving `studio`'s sessions."""
    models = [name for name, *_ in cnnvis.list_models()]
    recipes = [NO_RECIPE, *(name for name, *_ in list_recipes())]
    # Gradio's cache (uploads, previews, the copies it serves) keeps a day: the sessions'
    # own pictures stay in their folders, and are served again from there.
    with gr.Blocks(title="cnn-vis studio", analytics_enabled=False,
                   delete_cache=(3600, 24 * 3600)) as app:
        gr.Markdown("# cnn-vis studio\nDrop a photo (or leave it empty to start from noise), "
                    "pick a recipe, dream, and stop when it looks right.")
        # A session outlives a refresh of the page: the browser keeps its key.
        key = gr.BrowserState("", storage_key="cnn-vis-studio-session")
        ticket = gr.State(None)   # of this page's latest run (none through the API)

        def session_of(key_value, request: gr.Request):
            return studio.session(key_value if studio.issued(key_value) else request.session_hash)

        def queued(button: gr.Button, run, inputs: list, outputs: list, api_name: str):
            """`button` asks for `run` in the device's queue, with a ticket taken first."""
            def take_ticket(key_value, request: gr.Request) -> int:
                return session_of(key_value, request).take_ticket()

            button.click(take_ticket, key, ticket, queue=False, api_name=False).then(
                run, [*inputs, key, ticket], outputs, api_name=api_name, concurrency_limit=1,
                concurrency_id="device")

        def stop_run(key_value, request: gr.Request) -> None:
            session_of(key_value, request).stop_runs()

        def stops(button: gr.Button, api_name: str | bool = False) -> None:
            button.click(stop_run, key, None, queue=False, api_name=api_name)

        with gr.Tab("Picture"):
            with gr.Row():
                with gr.Column():
                    photo = photo_upload(elem_id="photo", label="photo (empty: noise)")
                    with gr.Row():
                        start = gr.Button("Dream", variant="primary", elem_id="dream")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    model = gr.Dropdown(models, value=STUDIO_MODEL, label="model", elem_id="model")
                    recipe = gr.Dropdown(recipes, value=NO_RECIPE, label="recipe",
                                         elem_id="recipe")
                    layer = gr.Dropdown(layer_choices(STUDIO_MODEL), value="", elem_id="layer",
                                        label="target_layer", info="its look beside its name (and the layer "
                                        "gallery's pictures, where it was made)")
                    layer_gallery = gr.Gallery(label="layer gallery (choose a layer)", columns=6,
                                               height=240, allow_preview=False, visible=False,
                                               elem_id="layer-gallery")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="seed",
                                     info="empty: a fresh one", elem_id="seed")
                    depth = gr.Radio(list(OUTPUT_DEPTHS), value=default("output_depth"),
                                     label="output_depth", info="bits per channel of the PNG")
                    main = [option_component(name) for name in MAIN_OPTIONS]
                    main[MAIN_OPTIONS.index("output_iter")].value = PREVIEW_EVERY
                    with gr.Accordion("advanced", open=False):
                        advanced = [option_component(name) for name in ADVANCED_OPTIONS]
                with gr.Column():
                    preview = gr.Image(label="preview", interactive=False, format="png",
                                       elem_id="preview")
                    progress = gr.Markdown(elem_id="progress")
                    history = gr.Gallery(label="history", columns=4, fit_columns=False,
                                         height=220, elem_id="history", allow_preview=False)
                    download = gr.DownloadButton("Download PNG", elem_id="download")
                    command = gr.Code(label="equivalent command line", language="shell",
                                      elem_id="command")
                    recorded = gr.Code(label="settings", language="json")
        with gr.Tab("Atlas"):
            gr.Markdown("A layer's neurons as a grid, each dreamed from noise with the neuron "
                        "recipe and the picture tab's model, filled in as they are made.")
            with gr.Row():
                atlas_layer = gr.Dropdown(layer_choices(STUDIO_MODEL), value="",
                                          label="target_layer", elem_id="atlas-layer")
                neurons = gr.Textbox("0-7", label="target_neuron", elem_id="atlas-neurons",
                                     info=SETTINGS["target_neuron"][1].help)
                atlas_steps = option_component("num_steps", "atlas")
                atlas_steps.value = recipe_values(ATLAS_RECIPE, STUDIO_MODEL)["num_steps"]
                atlas_seed = gr.Number(value=0, precision=0, minimum=0, label="seed",
                                       info="neuron k of the list gets seed + k")
            with gr.Row():
                atlas_start = gr.Button("Make the atlas", variant="primary", elem_id="atlas")
                atlas_stop = gr.Button("Stop", variant="stop")
            atlas_progress = gr.Markdown()
            grid = gr.Gallery(label="neurons", columns=8, fit_columns=False,
                              allow_preview=False)
        panel = [*main, *advanced]

        def picture_values(shown) -> dict[str, object]:
            return {name: option_value(name, value) for name, value in zip(PANEL_OPTIONS, shown)}

        video_tab(studio, queued, stops, session_of, [photo, model, layer, seed, depth], panel,
                  picture_values)

        def show_recipe(recipe_name: str, model_name: str):
            values = recipe_values(None if recipe_name == NO_RECIPE else recipe_name, model_name)
            values["output_iter"] = PREVIEW_EVERY
            return [values["target_layer"] or "", *(values[name] for name in PANEL_OPTIONS)]

        recipe.input(show_recipe, [recipe, model], [layer, *panel], api_name=False)

        def show_model(name: str):
            return (gr.Dropdown(choices=layer_choices(name), value=""),) * 2 + (
                layer_gallery_update(studio, name),)

        model.input(show_model, model, [layer, atlas_layer, layer_gallery], api_name=False)
        layer_gallery.select(picked_layer, model, layer, api_name=False)

        def restore(key_value, model_name, request: gr.Request):
            if not studio.issued(key_value):
                key_value = studio.issue_key()
            session = studio.session(key_value)
            return key_value, _gallery(session), layer_gallery_update(studio, model_name)

        app.load(restore, [key, model], [key, history, layer_gallery], api_name=False)

        def dream(photo_path, model_name, layer_name, seed_value, output_depth,
                  request: gr.Request, *shown):
            *shown, key_value, ticket_value = shown
            session = session_of(key_value, request)
            if not session.begin(ticket_value):
                yield gr.skip(), WAITED, *(gr.skip(),) * 4
                return
            values = picture_values(shown)
            values["target_layer"] = layer_name or None
            try:
                for update in run_picture(studio, session, photo_path, model_name,
                                          None if seed_value is None else int(seed_value),
                                          int(output_depth), values):
                    result = update.result
                    yield (gr.skip() if update.preview is None else update.preview,
                           update.progress,
                           *(_history(session) if result else (gr.skip(),) * 4))
            except UserError as error:
                raise gr.Error(str(error), print_exception=False) from None

        queued(start, dream, [photo, model, layer, seed, depth, *panel],
               [preview, progress, history, download, command, recorded], "dream")
        stops(stop, "stop")
        stops(atlas_stop)

        def make_atlas(model_name, layer_name, neuron_text, steps, seed_value, key_value,
                       ticket_value, request: gr.Request):
            session = session_of(key_value, request)
            if not session.begin(ticket_value):
                yield gr.skip(), WAITED
                return
            values = {**recipe_values(ATLAS_RECIPE, model_name),
                      "num_steps": option_value("num_steps", steps)}
            if layer_name:
                values["target_layer"] = layer_name
            try:
                yield from run_atlas(studio, session, model_name, neuron_text,
                                     None if seed_value is None else int(seed_value), values)
            except UserError as error:
                raise gr.Error(str(error), print_exception=False) from None

        queued(atlas_start, make_atlas, [model, atlas_layer, neurons, atlas_steps, atlas_seed],
               [grid, atlas_progress], "atlas")

        def select(key_value, event: gr.SelectData, request: gr.Request):
            """The chosen picture's file, command line and settings, and its settings in the
            controls, to dream it again."""
            results = session_of(key_value, request).results
            if not isinstance(event.index, int) or not 0 <= event.index < len(results):
                raise gr.Error("no such picture in this session's history.")
            chosen = results[event.index]
            values = json.loads(chosen.settings)
            return (str(chosen.png), chosen.command, chosen.settings, values["model"],
                    values["target_layer"] or "", values["seed"], values["output_depth"],
                    *(values[name] for name in PANEL_OPTIONS))

        history.select(select, key, [download, command, recorded, model, layer, seed, depth,
                                     *panel], api_name=False)
    return app


def _gallery(session) -> list[tuple[str, str]]:
    return [(str(result.png), result.caption) for result in session.results]


def _history(session) -> tuple:
    """The gallery, and the newest picture's file, command line and settings."""
    newest = session.results[-1]
    return _gallery(session), str(newest.png), newest.command, newest.settings

"""cnn-vis: Inceptionism images by gradient ascent on the pixels of a CNN's input.

    import cnnvis
    model = cnnvis.load_model("efficientnet_lite0")
    image = cnnvis.dream("photo.jpg", model, seed=0, num_steps=50)   # a PIL image
    cnnvis.make(model="efficientnet_lite0", initial_image="photo.jpg", output_file="d.png")

Importing the package changes nothing process-wide, and is quick: the names below load
their modules (and PyTorch) on first use. See README.md, "Python API".
"""
import importlib

# Public name -> the module that defines it.
_PUBLIC = {
    "dream": "cnnvis.api", "render": "cnnvis.api", "load_model": "cnnvis.api",
    "VisModel": "cnnvis.model", "DreamOptions": "cnnvis.settings", "Picture": "cnnvis.pixels",
    "Report": "cnnvis.optimizer", "UserError": "cnnvis.errors",
    "NonFiniteImage": "cnnvis.errors", "Interrupted": "cnnvis.errors",
    "keep_freed_memory": "cnnvis.engine",
    "animate": "cnnvis.animation", "dream_video": "cnnvis.animation", "Frame": "cnnvis.animation",
    "dream_video_chunks": "cnnvis.chunks", "ChunkFrame": "cnnvis.chunks", "frames_in_order": "cnnvis.chunks",
    "AnimationOptions": "cnnvis.settings",
    "atlas": "cnnvis.jobs", "run_jobs": "cnnvis.jobs", "Job": "cnnvis.jobs",
    "JobResult": "cnnvis.jobs", "ModelSpec": "cnnvis.zoo",
    "make": "cnnvis.workflows", "replay": "cnnvis.workflows", "list_layers": "cnnvis.workflows",
    "list_models": "cnnvis.workflows", "list_recipes": "cnnvis.workflows",
    "classify": "cnnvis.workflows",
    "download": "cnnvis.workflows", "layer_gallery": "cnnvis.workflows", "Outcome": "cnnvis.request",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cnnvis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value   # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))

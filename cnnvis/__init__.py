"""cnn-vis: Inceptionism images by gradient ascent on the pixels of a CNN's input.

    import cnnvis
    model = cnnvis.load_model("efficientnet_lite0")
    image = cnnvis.dream("photo.jpg", model, seed=0, num_steps=50)   # a PIL image

Importing the package changes nothing process-wide. See README.md, "Python API".
"""
from cnnvis.api import dream, load_model, render
from cnnvis.engine import keep_freed_memory
from cnnvis.errors import Interrupted, NonFiniteImage, UserError
from cnnvis.model import VisModel
from cnnvis.optimizer import Report
from cnnvis.pixels import Picture
from cnnvis.settings import DreamOptions

__all__ = ["dream", "render", "load_model", "VisModel", "DreamOptions", "Picture", "Report",
           "UserError", "NonFiniteImage", "Interrupted", "keep_freed_memory"]

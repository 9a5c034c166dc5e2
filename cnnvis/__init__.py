"""cnn-vis: Inceptionism images by gradient ascent on the pixels of a CNN's input."""

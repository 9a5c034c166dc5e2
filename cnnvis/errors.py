"""The exceptions a user of cnn-vis meets: mistakes they can fix, and stopped runs."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a file, an option, a setting).

    The command line prints its message (which names the problem and the fix)
    and exits with status 2, without a traceback.
    """


class NonFiniteImage(UserError):
    """The image stopped being finite. `picture` (a `cnnvis.Picture`) is the last finite
    image when the run had one."""

    picture = None


class Interrupted(KeyboardInterrupt):
    """A dream stopped by Ctrl-C (or SIGTERM at the command line). `picture` (a
    `cnnvis.Picture`) is the image as it was, or None when none was made yet."""

    def __init__(self, picture=None):
        super().__init__()
        self.picture = picture

"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input (a file, an option, a setting).

    The command line prints its message (which names the problem and the fix)
    and exits with status 2, without a traceback.
    """

"""The one exception type the command line turns into a one-line error message."""


class StreamFuseError(Exception):
    """A user-facing failure: the message names the file or setting and how to fix it."""

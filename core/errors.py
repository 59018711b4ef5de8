"""The base class of errors caused by user input (config, data, model paths).

The CLI prints these as one clear message and exits 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""

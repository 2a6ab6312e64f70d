"""The one error type users see: a message that names the file, line or field at fault."""


class DistillError(Exception):
    """Bad input or an unusable environment. The CLI prints the message and exits with 2."""

"""An exception module that only a remote worker would import: the client must never load it."""


class Oops(Exception):
    """Raised by a task in a module the producer does not import."""

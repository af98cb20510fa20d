"""Exceptions raised by mgv2; each message names the problem and the fix."""


class MGV2Error(Exception):
    """Base class of every mgv2 error."""


class CheckpointError(MGV2Error):
    """A weight file is missing, unreadable, or does not fit the model."""


class ImageError(MGV2Error):
    """An image cannot be read or has an unusable shape."""


class TaskError(MGV2Error):
    """A task identifier, instruction or answer is malformed."""

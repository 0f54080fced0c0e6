"""User-facing errors: bad input that the user can fix, reported in one line without a traceback."""


class HeadstartError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and what to do."""


class DataError(HeadstartError):
    """The data set cannot be read or used as given."""


class BackboneError(HeadstartError):
    """The backbone name is unknown or its weights are not available."""


class ArtifactError(HeadstartError):
    """A saved model, backbone folder or checkpoint is damaged, tampered with, or from an incompatible version."""


class SettingsError(HeadstartError):
    """An option is out of its range or does not apply."""


class InputTooLarge(DataError):
    """One input would decode to more than a limit allows (pixels, duration); the message names the limit and
    the option or environment variable that sets it. The server answers it with 413."""

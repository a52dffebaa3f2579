"""The failures a user can cause or fix, each reported as one line by the stage scripts."""


class MonosemError(Exception):
    """Base class: a problem with the user's inputs or environment, not a bug."""


class ParamsError(MonosemError, ValueError):
    """A parameter that is missing, of the wrong type, out of range or unknown."""


class ArtifactError(MonosemError, ValueError):
    """A file that is missing or is not a valid monosem artifact."""


class TrackingError(MonosemError, RuntimeError):
    """The tracking store cannot be reached or used."""

"""The exceptions histoflow raises on purpose.

Every error a user can cause names the file, the field and what was expected, so a message
read in a CI log is enough to fix the problem.
"""


class HistoflowError(Exception):
    """Base class of every error histoflow raises on purpose."""


class DataError(HistoflowError):
    """Input data is missing, unreadable, mislabelled or inconsistent."""


class ConfigError(HistoflowError, ValueError):
    """A configuration value or command-line option is invalid."""


class SlideReadError(HistoflowError, OSError):
    """A slide file cannot be opened or a region of it cannot be read."""


class CheckpointError(HistoflowError):
    """A checkpoint is missing, corrupt or incompatible with the data or code."""


class TrainingError(HistoflowError):
    """Training cannot go on (for example the loss became NaN)."""

"""The project's own errors. CLIs turn these into one line; anything else is a bug."""


class CrnError(Exception):
    """A problem the user can fix; the message names it and says what to do."""

    exit_code = 1


class UsageError(CrnError):
    """Bad command-line usage or bad input: exit code 2."""

    exit_code = 2


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, or of another architecture."""


class ArtifactError(UsageError):
    """An exported artifact or manifest that is missing, corrupt or incompatible."""


class UnreadableInput(UsageError):
    """One input file that cannot be read or decoded (empty, damaged, gone): a run over many names it and goes on."""


class ValidationError(CrnError):
    """An export whose outputs fell short of the parity gate."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""

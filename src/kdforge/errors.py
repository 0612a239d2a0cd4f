"""Errors a user can act on. The CLI prints them as one line and exits with `exit_code`."""


class KDForgeError(Exception):
    """Bad input (recipe, data file, model folder, CLI argument): exit code 2."""

    exit_code = 2


class GateFailed(KDForgeError):
    """A pipeline gate (e.g. max_accuracy_drop) stopped the run: exit code 3."""

    exit_code = 3


class NonFiniteLoss(KDForgeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""

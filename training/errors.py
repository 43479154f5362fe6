"""The one error a refused run raises."""


class UsageError(ValueError):
    """Bad options or data, found before any training step: reported as one paragraph, exit code 2."""

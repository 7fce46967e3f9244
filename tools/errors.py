"""The host tools' errors: one base, so the `qis` command catches them once."""


class ToolError(Exception):
    """A host tool cannot do what was asked; the message names what is wrong and what to do."""


class UsageError(ToolError):
    """Arguments that parse but make no sense together (the command exits with status 2)."""

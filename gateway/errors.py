"""The gateway library's errors: one base, so a caller (the `qis` command) catches them once."""


class GatewayError(Exception):
    """Something the gateway cannot work with; the message names it and, where it can, the fix."""

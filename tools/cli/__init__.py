"""The `qis` command: the command table, one error funnel, and the gateway commands' arguments."""

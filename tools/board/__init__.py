"""Boards you can flash: `qis board build`, `qis board check`, `qis board deploy`.

targets.py names each board's runtime, mpy-cross architecture and stub port; build.py
compiles a deployable folder and reports sizes; check.py type-checks against the port's
stubs; deploy.py copies a build to a board (mpremote) or installs it on a Pi (systemd).
"""

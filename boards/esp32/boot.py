# Runs first at every reset. The flash file system must be littlefs (the default of
# MicroPython's ESP32 builds since 1.13): the counter and the outbox rely on its atomic
# rename and on surviving power loss during a write, which FAT does not promise.
import os

import vfs

_fs = [m for m in vfs.mount() if m[1] == "/"]
if _fs and "Lfs" not in type(_fs[0][0]).__name__:
    print("qis: / is not littlefs; the outbox needs it (see boards/esp32/README.md)")
try:
    os.mkdir("/state")  # the counter slots and the outbox
except OSError:
    pass

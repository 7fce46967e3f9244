# Runs the unix board's device from a ROMFS image, as a board whose code is in flash does:
#   micropython -X heapsize=H romboot.py IMAGE STATE_DIR FRAMES REPLAY_FILE OFFSET
# The image (`qis board build --board unix` writes romfs.img: lib/ as MicroPython's ROMFS)
# is read into one buffer before anything else, mounted at /rom and imported from in
# place: bytecode and constants stay in the image, as they would in a flash partition.
# The buffer itself stands in for that flash, so the heap the device has is H minus the
# image: `qis device emulate --romfs --heap 96K` asks for 96K plus the image's size.
import os
import sys

import vfs


def _mount(path):
    image = bytearray(os.stat(path)[6])
    with open(path, "rb") as f:
        f.readinto(image)
    # (The stubs declare VfsRom a block device; MicroPython's takes the image's buffer.)
    vfs.mount(vfs.VfsRom(image), "/rom")  # type: ignore[abstract]
    return image


_IMAGE = _mount(sys.argv.pop(1))  # kept referenced: the mounted code points into it
sys.path[:] = ["/rom", ".frozen"]  # nothing is imported from files any more
# The build's compiled boards/unix/main.py: importing it runs the device.
import unix_main  # type: ignore[import-not-found]  # noqa: E402,F401

# ruff: noqa: F821 - include(), package() and module() are the manifest language's own
# Freezes the edge package, this board's modules and (when the build made it) the model
# into ESP32 firmware, so their bytecode, native code and constants run from flash:
#     qis board build --board esp32            (writes var/build/esp32/, this file included)
#     cd $MICROPYTHON/ports/esp32 && make BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/var/build/esp32/manifest.py
# Paths are relative to this file's folder, i.e. the build folder: src/ holds the sources.
include("$(PORT_DIR)/boards/manifest.py")
package("edge", base_path="src")
module("pins.py", base_path="src")
module("sensor.py", base_path="src")
module("esp32_main.py", base_path="src")  # main.py of boards/esp32 (the build's main.py imports it)
# The model as a bytes constant (model_qem.DATA, None for --model rule): frozen, it stays
# in flash and the runtime's weights are views into it.
module("model_qem.py", base_path="src")

# Pin maps of the common ESP32 wirings (GPIO numbers). A config's "pins" object names one
# map and may override any of its entries, e.g. {"map": "devkit", "adc": 34}.
#
# - uart: the link to a host or a modem (UART2: ESP32 DevKitC's free UART; UART0 is the
#   USB console).
# - spi: an SX126x (sx126x: busy and dio1) or SX127x (sx127x: dio0) LoRa radio; the
#   LoRa link arrives with the links work, the pins are fixed here.
# - adc: an analog ECG front end (an AD8232 board's OUTPUT) on an ADC1 pin (ADC2 pins are
#   unusable while Wi-Fi runs), sampled at 360 Hz from a hardware timer.
MAPS = {
    # ESP32 DevKitC with an SX1262 module (Waveshare/Ebyte wiring) and an AD8232.
    "devkit": {
        "uart": 2, "uart_tx": 17, "uart_rx": 16, "uart_baud": 115200,
        "spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "reset": 14, "busy": 26, "dio1": 33, "dio0": -1,
        "adc": 36, "timer": 0, "led": 2,
    },
    # TTGO/LILYGO LoRa32 v2.1 (on-board SX1276).
    "lora32": {
        "uart": 2, "uart_tx": 13, "uart_rx": 12, "uart_baud": 115200,
        "spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18, "reset": 23, "busy": -1, "dio1": -1, "dio0": 26,
        "adc": 36, "timer": 0, "led": 25,
    },
}


def pins(config):
    """The pin map a config asks for: MAPS[config["pins"]["map"]] with its overrides."""
    asked = config.get("pins", {})
    name = asked.get("map", "devkit")
    if name not in MAPS:
        raise ValueError("no pin map %r (maps: %s)" % (name, ", ".join(sorted(MAPS))))
    chosen = dict(MAPS[name])
    for key in asked:
        if key != "map":
            if key not in chosen:
                raise ValueError("pin map has no entry %r" % key)
            chosen[key] = asked[key]
    return chosen

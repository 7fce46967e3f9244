"""Simulation on the host: the MicroPython launcher, the emulated device, the serial cable, the demo."""

# Helpers shared by the tests in tests/edge/. These tests run twice: under pytest on
# CPython, and under the MicroPython unix port through tests/edge/mp_run.py. So they use
# nothing but plain functions and `assert`, and import the edge code through `load`.
import os
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


def load(name):
    """The edge module `name`: qis.edge.<name> on CPython, edge.<name> on a board."""
    if IS_MICROPYTHON:
        pkg = __import__("edge." + name)
        for part in name.split("."):
            pkg = getattr(pkg, part)
        return pkg
    import importlib

    return importlib.import_module("qis.edge." + name)


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raises; fail if it raises nothing or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("expected %s from %r" % (exc_type.__name__, fn))


def tmpdir(tag="t"):
    """A fresh empty directory under /tmp (MicroPython has no tempfile module)."""
    path = "/tmp/qis-%s-%s" % (tag, hexstr(os.urandom(6)))
    os.mkdir(path)
    return path


def rmtree(path):
    for name in os.listdir(path):
        full = path + "/" + name
        if os.stat(full)[0] & 0x4000:
            rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def hexstr(data):
    return "".join("%02x" % b for b in data)


def unhex(text):
    return bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))


def vector_path(name):
    """Path of a golden vector file in tests/vectors/, from either interpreter."""
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    return here + "/../vectors/" + name

# Errors raised by the edge code. Input is never checked with `assert` (it vanishes under
# `micropython -O`); every check raises one of these, with a message naming what is wrong.


class QisError(Exception):
    """Base of every error the protocol core raises on bad input."""


class DecodeError(QisError):
    """Bytes that are not a valid encoding (CBOR, COBS, frame layout)."""


class EncodeError(QisError):
    """A value that cannot be encoded (unsupported type, does not fit its profile)."""


class AuthError(QisError):
    """Authentication failed: wrong key, forged or corrupted ciphertext."""


class FrameError(QisError):
    """A well-formed message that breaks the frame rules (version, type, size, field)."""


class FlashError(QisError):
    """Persistent state on flash is unusable (corrupt, or the file system refused)."""


class ConfigError(QisError):
    """A parameter given to the edge code is outside what it supports (a sample rate, a
    buffer or fingerprint shape): a programming or configuration error, not bad input."""


class ModelError(QisError):
    """An edge model file is truncated, corrupted, of another version, or unsupported."""

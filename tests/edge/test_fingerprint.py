from edgetest import load, raises

fp = load("fingerprint")
errors = load("errors")

# Golden bits: the same on MicroPython and CPython (integer arithmetic only).
GOLDEN_COMPACT = "fcca438a"
GOLDEN_FULL = "fce2ca8a43fc8acf6061e08f4b91a7ca"
VEC = [12, -40, 7, 99, -3, 0, 55, -127, 18, 64, -64, 1, 2, -5, 100, 64]


def test_golden_fingerprints():
    compact = fp.SimHash(16, 4, 8, seed=1)
    full = fp.SimHash(16, 8, 16, seed=1)
    a = bytes(compact.fingerprint(VEC))
    b = bytes(full.fingerprint(VEC))
    assert len(a) == 4 and len(b) == 16
    assert a.hex() == GOLDEN_COMPACT, a.hex()
    assert b.hex() == GOLDEN_FULL, b.hex()


def test_similar_vectors_have_close_fingerprints():
    h = fp.SimHash(16, 8, 16, seed=3)
    base = bytes(h.fingerprint(VEC))
    near = bytes(h.fingerprint([v + (1 if i % 2 else -1) for i, v in enumerate(VEC)]))
    far = bytes(h.fingerprint([-v for v in VEC]))
    assert fp.hamming(base, near) < 16
    assert fp.hamming(base, far) > 96  # the opposite vector flips (almost) every sign


def test_bucket_reads_table_bits():
    h = fp.SimHash(16, 4, 8, seed=1)
    bits = bytes(h.fingerprint(VEC))
    assert [h.bucket(bits, t) for t in range(4)] == list(bits)


def test_seed_changes_the_planes():
    a = bytes(fp.SimHash(16, 4, 8, seed=1).fingerprint(VEC))
    b = bytes(fp.SimHash(16, 4, 8, seed=2).fingerprint(VEC))
    assert a != b


def test_bad_shapes_are_refused():
    raises(errors.ConfigError, fp.SimHash, 16, 3, 5)
    h = fp.SimHash(16, 4, 8)
    err = raises(errors.ConfigError, h.fingerprint, [1, 2, 3])
    assert "16" in str(err)

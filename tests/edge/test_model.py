# The edge model runtime: compiled test models against their stored onnxruntime outputs,
# bad files, the API, and no allocation per inference. Runs under pytest and MicroPython.
import binascii
import gc
import json
import struct

from edgetest import IS_MICROPYTHON, load, raises, rmtree, tmpdir, unhex, vector_path

model = load("model")
errors = load("errors")


def _vectors():
    with open(vector_path("models/models.json")) as f:
        return json.load(f)


def _bytes(name):
    with open(vector_path("models/" + name), "rb") as f:
        return f.read()


def test_compiled_models_match_stored_onnxruntime_outputs_exactly():
    checked = 0
    for name, doc in _vectors().items():
        m = model.Model(vector_path("models/" + doc["file"]))
        for case in doc["cases"]:
            m.set_input_q(unhex(case["input_q"]))
            m.run()
            for out, want in case["outputs"].items():
                assert list(m.output(out)) == want, (name, out)
                checked += 1
    assert checked >= 8


def test_a_model_in_bytes_or_viewed_in_place_gives_the_same_outputs():
    """Model(bytes) (frozen firmware) and Model(memoryview) (a file in a ROMFS image, viewed
    in place) read the same parameters as the file: the same outputs, bit for bit."""
    for name, doc in _vectors().items():
        data = _bytes(doc["file"])
        for src in (data, memoryview(data)):
            m = model.Model(src)
            for case in doc["cases"]:
                m.set_input_q(unhex(case["input_q"]))
                m.run()
                for out, want in case["outputs"].items():
                    assert list(m.output(out)) == want, (name, type(src), out)


def test_qparams_shapes_and_softmax_flags():
    for name, doc in _vectors().items():
        m = model.Model(vector_path("models/" + doc["file"]))
        s, z = m.input_qparams()
        assert abs(s - doc["input_qparams"][0]) < 1e-6 * s and z == doc["input_qparams"][1]
        for out, (scale, zp) in doc["output_qparams"].items():
            s, z = m.output_qparams(out)
            assert abs(s - scale) < 1e-6 * scale and z == zp
            assert m.has_softmax(out) == (out in doc["softmax"])
    cnn = model.load(vector_path("models/tiny_cnn.qem"))
    assert cnn.input_shape() == (1, 1, 24) and cnn.input_size() == 24
    assert cnn.output_names() == ["scores", "embedding"] and cnn.output_shape("embedding") == (1, 8)
    assert cnn.macs > 0 and cnn.arena_bytes > 0


def test_quantize_input_matches_host_quantization():
    doc = _vectors()["tiny_cnn"]
    m = model.Model(vector_path("models/tiny_cnn.qem"))
    for case in doc["cases"]:
        m.quantize_input(case["input_f"])
        m.run()
        assert list(m.output("scores")) == case["outputs"]["scores"]
        assert list(m.output("embedding")) == case["outputs"]["embedding"]


def test_argmax_and_topk():
    doc = _vectors()["tiny_cnn"]
    m = model.Model(vector_path("models/tiny_cnn.qem"))
    for case in doc["cases"]:
        m.set_input_q(unhex(case["input_q"]))
        m.run()
        logits = case["outputs"]["scores"]
        best = logits.index(max(logits))
        assert m.argmax("scores") == best
        top = m.topk("scores", 3)
        assert [c for c, _, _ in top][0] == best and len(top) == 3
        total = sum(p for _, p, _ in top)
        assert abs(total - 1.0) < 1e-6  # all 3 classes: probabilities sum to 1
        assert top[0][1] >= top[1][1] >= top[2][1]
        assert 0 <= top[2][2] <= top[0][2] <= 255 and top[0][2] == int(top[0][1] * 255 + 0.5)


def test_run_allocates_nothing_and_reuses_buffers():
    doc = _vectors()["tiny_cnn"]
    m = model.Model(vector_path("models/tiny_cnn.qem"))
    x = unhex(doc["cases"][0]["input_q"])
    m.set_input_q(x)
    m.run()
    out = m.output("scores")
    first = list(out)
    m.set_input_q(unhex(doc["cases"][1]["input_q"]))
    if IS_MICROPYTHON:
        gc.collect()
        gc.disable()  # nothing may be allocated, so nothing is collected either
        try:
            before = gc.mem_alloc()
            for _ in range(20):
                m.run()
                m.argmax("scores")
            grew = gc.mem_alloc() - before
        finally:
            gc.enable()
        assert grew == 0, grew
    else:
        m.run()
    assert m.output("scores") is out  # the same array, refreshed in place
    assert list(out) == doc["cases"][1]["outputs"]["scores"] and list(out) != first


def test_bad_files_raise_model_error():
    good = _bytes("tiny_cnn.qem")
    model.Model(good)  # the untouched bytes load

    def fixed_crc(data):
        body = data[:-4]
        return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)

    e = raises(errors.ModelError, model.Model, good[:-7])
    assert "truncated" in str(e)
    e = raises(errors.ModelError, model.Model, good[:20])
    assert "truncated" in str(e)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    e = raises(errors.ModelError, model.Model, bytes(flipped))
    assert "CRC32" in str(e)
    e = raises(errors.ModelError, model.Model, fixed_crc(b"QEMX" + good[4:]))
    assert "magic" in str(e)
    e = raises(errors.ModelError, model.Model, fixed_crc(good[:4] + struct.pack("<H", 9) + good[6:]))
    assert "version 9" in str(e)
    e = raises(errors.ModelError, model.Model, good + b"\x00")
    assert "header says" in str(e)
    e = raises(errors.ModelError, model.Model, "/nonexistent/model.qem")
    assert "cannot read" in str(e)


def test_model_from_a_file_on_disk_and_api_errors():
    d = tmpdir("model")
    try:
        path = d + "/m.qem"
        with open(path, "wb") as f:
            f.write(_bytes("tiny_qop.qem"))
        m = model.Model(path)
        e = raises(errors.ModelError, m.output, "nope")
        assert "nope" in str(e) and "y" in str(e)
        e = raises(errors.ModelError, m.set_input_q, b"\x00" * 3)
        assert "3 values" in str(e)
        e = raises(errors.ModelError, m.quantize_input, [0.0])
        assert "1 values" in str(e)
    finally:
        rmtree(d)


def test_outputs_go_to_caller_provided_buffers():
    from array import array

    m = model.Model(vector_path("models/tiny_cnn.qem"))
    first = m.output_names()[0]
    m.quantize_input([0.25 * ((i % 7) - 3) for i in range(m.input_size())])
    m.run()
    expected = list(m.output(first))
    mine = array("b", bytes(len(expected)))
    m.bind_output(first, mine)
    m.run()
    assert m.output(first) is mine
    assert list(mine) == expected
    raises(errors.ModelError, m.bind_output, first, array("b", bytes(len(expected) + 1)))

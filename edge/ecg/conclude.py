# Models that turn one beat into a conclusion: (label, confidence 0..255, top-k, embedding).
#
# Every model here has the same small interface, so the device loop does not care which
# runs: `model_id` (the frame's model field), `embedding_dim`, and
# conclude(window, rr, mean_rr) -> (label, confidence, topk, embedding), where topk is a
# list of [label, score 0..255] pairs, best first, and embedding a sequence of ints. The
# returned embedding may be a reused buffer.
from array import array

from . import beats
from .registry import MODEL_RULE


class RuleModel:
    """The RR-interval rule of ecg.beats: premature (1) or normal (0)."""

    model_id = MODEL_RULE
    embedding_dim = beats.EMBED_DIM

    def __init__(self):
        self._embedding = array("b", bytes(beats.EMBED_DIM))

    def conclude(self, window, rr, mean_rr):
        label, confidence = beats.classify_rr(rr, mean_rr)
        topk = [[label, confidence], [1 - label, 255 - confidence]]
        return label, confidence, topk, beats.embedding(window, rr, mean_rr, self._embedding)


class QemModel:
    """An int8 edge model (.qem) with outputs "scores" (Softmax logits) and "embedding".

    ECG5000, which the reference models learned from, stores beats with the opposite
    polarity to the MLII lead of the MIT-BIH replay (its R wave is a negative spike), so
    the window is negated as it is quantized.
    """

    def __init__(self, path, model_id, invert=True):
        from ..model import Model  # only boards that run a learned model load the runtime

        self._model = Model(path)
        self.model_id = model_id
        self._sign = -1 if invert else 1
        self._scale, self._zp = self._model.input_qparams()
        self._input = bytearray(self._model.input_size())
        self.embedding_dim = len(self._model.output("embedding"))

    def conclude(self, window, rr, mean_rr):
        buf, scale, zp, sign = self._input, self._scale, self._zp, self._sign
        for i in range(len(buf)):
            q = round(sign * window[i] / scale) + zp
            buf[i] = (-128 if q < -128 else 127 if q > 127 else q) & 0xFF
        m = self._model
        m.set_input_q(buf)
        m.run()
        best = m.topk("scores", 5)
        topk = [[cls, conf] for cls, _p, conf in best]
        return best[0][0], best[0][2], topk, m.output("embedding")

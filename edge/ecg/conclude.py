# Models that turn one beat into a conclusion: (label, confidence 0..255, top-k).
#
# Every model here has the same small interface, so the application does not care which
# runs: `model_id` (the frame's model field) and conclude(window, rr, mean_rr) ->
# (label, confidence, topk), where topk is a list of [label, score 0..255] pairs, best
# first. What a beat is similar to is not the model's business: the fingerprint comes
# from the domain's features (ecg.features), the same for every model.
from . import beats
from .registry import MODEL_RULE


class RuleModel:
    """The RR-interval rule of ecg.beats: premature (1) or normal (0)."""

    model_id = MODEL_RULE

    def conclude(self, window, rr, mean_rr):
        label, confidence = beats.classify_rr(rr, mean_rr)
        return label, confidence, [[label, confidence], [1 - label, 255 - confidence]]


class QemModel:
    """An int8 edge model (.qem) whose output "scores" holds the classes' Softmax logits.

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
        return best[0][0], best[0][2], topk

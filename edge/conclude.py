# Models that turn one beat into a conclusion: (label, confidence 0..255, top-k, embedding).
#
# Every model here has the same small interface, so the device loop does not care which
# runs: `model_id` (the frame's model field), `embedding_dim`, and
# conclude(window, rr, mean_rr) -> (label, confidence, topk, embedding), where topk is a
# list of [label, score 0..255] pairs, best first, and embedding a sequence of ints. The
# returned embedding may be a reused buffer.
from array import array

from . import beats

MODEL_RULE = 1  # the RR-interval rule (no learned weights)


class RuleModel:
    """The RR-interval rule of edge.beats: premature (1) or normal (0)."""

    model_id = MODEL_RULE
    embedding_dim = beats.EMBED_DIM

    def __init__(self):
        self._embedding = array("b", bytes(beats.EMBED_DIM))

    def conclude(self, window, rr, mean_rr):
        label, confidence = beats.classify_rr(rr, mean_rr)
        topk = [[label, confidence], [1 - label, 255 - confidence]]
        return label, confidence, topk, beats.embedding(window, rr, mean_rr, self._embedding)

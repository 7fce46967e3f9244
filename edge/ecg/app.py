# The ECG application: samples of one lead at 360 Hz -> beats -> one conclusion per beat.
# It is what a board's device loop (edge/device.py) calls for observations; it knows
# nothing of frames, links or the outbox.
#
# Rules: observe() reads at most `budget` samples, so the device loop gets to service its
# link between two calls; the first beat has no RR interval yet and is not concluded;
# `ended` turns True once the sample source has run dry.
from array import array

from . import beats
from .registry import DOMAIN_ECG_BEAT


class EcgApp:
    def __init__(self, samples, model, simhash, fs=360, budget=720):
        """samples: an iterator of ints (the lead, at fs Hz); model: a conclude.* model;
        simhash: the fingerprint.SimHash of the frames' profile."""
        self._samples = samples
        self._model = model
        self._simhash = simhash
        self._window = array("f", bytes(4 * beats.WINDOW))
        self._detector = beats.BeatDetector(fs, self._window)
        self._budget = budget  # samples per observe() call: 2 s at 360 Hz
        self.model_id = model.model_id
        self.domain = DOMAIN_ECG_BEAT
        self.ended = False

    def observe(self):
        """(label, confidence, fingerprint, topk, details) for the next beat within budget
        samples, or None. The fingerprint is a reused buffer (the frame copies it)."""
        for _ in range(self._budget):
            sample = next(self._samples, None)
            if sample is None:
                self.ended = True
                return None
            beat = self._detector.feed(sample)
            if beat is not None and beat[1]:
                r, rr, mean_rr = beat
                label, confidence, topk, emb = self._model.conclude(self._window, rr, mean_rr)
                return label, confidence, self._simhash.fingerprint(emb), topk, {"r": r}
        return None

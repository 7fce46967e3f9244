# The ECG application: samples of one lead at 360 Hz -> beats -> one conclusion per beat.
# It is what a board's device loop (edge/device.py) calls for observations; it knows
# nothing of frames, links or the outbox.
#
# Rules: observe() reads at most `budget` samples, so the device loop gets to service its
# link between two calls; the first beat has no RR interval yet and is not concluded;
# `ended` turns True once the sample source has run dry.
from ..compat import zeros
from ..fingerprint import spec
from . import beats, features
from .registry import DOMAIN_ECG_BEAT


class EcgApp:
    def __init__(self, samples, model, prof, fs=360, budget=720):
        """samples: an iterator of ints (the lead, at fs Hz); model: a conclude.* model;
        prof: the frames' profile (its fingerprint size)."""
        self._samples = samples
        self._model = model
        self._simhash = spec(DOMAIN_ECG_BEAT).simhash(prof)
        self._features = zeros("b", features.DIM)
        self._window = zeros("f", beats.WINDOW)
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
            det = self._detector
            beat = det.feed(sample)
            if beat is not None and beat[1]:
                r, rr, mean_rr = beat
                label, confidence, topk = self._model.conclude(self._window, rr, mean_rr)
                f = features.beat_features(det.samples, det.mask, det.start, det.span, rr, mean_rr, self._features)
                return label, confidence, self._simhash.fingerprint(f), topk, {"r": r}
        return None

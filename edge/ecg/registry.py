# The ECG application's one registry: its domain id, the model ids its frames carry, the
# model files of the reference models and the names of their labels. Frames carry only
# numbers; everything that shows a name (the demo, exports) looks it up here.
from ..compat import const

DOMAIN_ECG_BEAT = const(1)

MODEL_RULE = const(1)  # the RR-interval rule of ecg.beats (no learned weights)
MODEL_ECG_MLP = const(2)
MODEL_ECG_CNN = const(3)
MODEL_ECG_DSCNN = const(4)  # depthwise separable CNN

ECG5000_LABELS = ("normal", "R-on-T PVC", "PVC", "SP/EB", "unclassified")
RULE_LABELS = ("normal", "premature")

# name -> (model id, edge model file under models/, or None for the rule; label names)
MODELS = {
    "rule": (MODEL_RULE, None, RULE_LABELS),
    "mlp": (MODEL_ECG_MLP, "ecg_mlp/model.qem", ECG5000_LABELS),
    "cnn": (MODEL_ECG_CNN, "ecg_cnn/model.qem", ECG5000_LABELS),
    "dscnn": (MODEL_ECG_DSCNN, "ecg_dscnn/model.qem", ECG5000_LABELS),
}


def label_names(model_id):
    """The label names of a model id, or None for a model this registry does not know."""
    for mid, _, names in MODELS.values():
        if mid == model_id:
            return names
    return None

# The ECG application: beat detection on a 360 Hz lead, the models that conclude on a
# beat, and the one registry of its domain id, model ids and label names.

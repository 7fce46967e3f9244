"""Training the reference models: graphs (ONNX), fit (PyTorch), quantize, evaluate, card,
and the `qis model train` command."""

"""The reference models (ONNX float and int8, compiled .qem, model cards), as package data of
qis.models so that an installed qis-edge finds them."""

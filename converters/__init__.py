"""Conversion stages: source -> ONNX export -> precision -> (TensorRT engine) -> artifact."""

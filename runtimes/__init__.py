"""Backends that run an artifact's graphs: onnxruntime (CPU, CUDA), TensorRT, and a PyTorch reference."""

"""What a device needs to run an artifact's graphs; never imports the converters.

    base.py          the Runner interface (run, and a decode-step loop through `stepper`)
    select.py        device selection: "auto" | "cpu" | "cuda" | "tensorrt"
    probe.py         what this machine has, for `edgekit doctor`
    cuda.py          device memory through cuda-python (shared by onnxruntime CUDA and TensorRT)
    onnxruntime/     the CPU default and onnxruntime CUDA
    tensorrt/        engine build, fingerprints, runner (NVIDIA GPUs and Jetson)
"""

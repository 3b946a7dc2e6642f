"""What needs torch: PyTorch -> ONNX export, precision, parity. Installed as `edgekit.converters`.

    pipeline.py     convert(): source -> spec -> export -> precision -> files -> manifest -> parity
    sources.py      what the user passed (nn.Module, HF folder, .pt2, factory) as one Source
    spec.py         the ExportSpec every family implements, calibration, parity gates
    specs/          one spec per family, and `match` that picks it
    export.py       torch.onnx.export (dynamo, named dims, opset 18)
    precision.py    fp16 casts, int8 (static Q/DQ with an accuracy budget, or dynamic), int4
    sensitivity.py  the int8 accuracy budget: which layers to keep in float
    parity.py       output comparisons and their gates
    reference.py    the PyTorch side of parity and bench
    wrappers.py     small nn.Modules that give the exporter positional tensors
May import edgekit.runtimes; the runtimes never import this package.
"""

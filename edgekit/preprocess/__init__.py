"""Raw inputs to graph inputs on the device, with numpy, PIL, soundfile/soxr and tokenizers only.

    image.py  images (paths, PIL, arrays) -> float tensors (resize, crop, rescale, normalize)
    audio.py  audio files and arrays -> mono float waveforms at the model's rate, chunks, log-mel
    text.py   texts -> token ids with the artifact's tokenizer.json
"""

"""The offline starter backbone: EfficientNet-Lite0 image features + all-MiniLM-L6-v2, both shipped in PyPI packages."""

"""The offline starter reasoner: SmolLM2-135M-Instruct given eyes by EfficientNet-Lite0, all from PyPI packages."""

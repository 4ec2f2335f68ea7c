"""The late-fusion starter backbone: frozen MiniLM token states and EfficientNet cells, side by side."""

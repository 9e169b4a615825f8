"""The network and its files: the modules (``modeling/``), named backbones and the builder, checkpoints and
weight loading, the model file, ONNX exports' cards, and the authors' checkpoint import. Needs torch except
``card_reader`` and ``onnx_card``."""

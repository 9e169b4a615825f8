"""Tiled classification of rasters: the engine (``inference``), its tile runners (PyTorch, ONNX Runtime),
devices, and the ONNX export. ``inference``, ``runners`` and ``onnx_runner`` are torch-free."""

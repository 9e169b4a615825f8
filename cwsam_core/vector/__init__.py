"""Polygons in (training labels rasterised per window) and polygons out (class maps vectorised). Torch-free."""

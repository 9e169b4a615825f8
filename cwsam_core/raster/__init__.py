"""Rasters in and out: SAR radiometry, windows, scenes of several files, class-map output (GeoTIFF, style,
COG) and quick-looks. Torch-free."""

"""What every part shares: the model card (classes, scales, normalisation), class lists, label sources' common
terms, and output paths and their guards. Torch-free; imports only ``cwsam_core.errors``."""

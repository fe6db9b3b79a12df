"""The file suffixes read as images wherever the package lists a folder (batch runs, evaluation, training).

Standard library only, so that the command line can list a folder without importing torch.
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

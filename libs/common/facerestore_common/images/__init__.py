"""Image intake rules that more than one service applies: uploads (the upload service) and
query photos of a similar-face search (the history service) pass the same checks."""

from facerestore_common.images.validation import ImageLimits, NormalisedImage, normalise, sniff_type

__all__ = ["ImageLimits", "NormalisedImage", "normalise", "sniff_type"]

"""retrieval-kd: distil retrieval models from stored, versioned teacher scores."""

__version__ = "0.1.0"

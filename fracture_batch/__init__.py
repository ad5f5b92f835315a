"""fracture-batch: fracture classification for X-ray archives (runtime package)."""
__version__ = "0.1.0"

"""storagefs: remote simulation storage as a local drive, ZIP archives as directories."""

__version__ = "0.1.0"

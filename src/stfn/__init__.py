"""stfn: two-stream video action recognition around the Spatio-Temporal Fusion Network."""

__version__ = "0.1.0"

"""icm: label a dataset with no human labels by Internal Coherence Maximization."""

__version__ = "0.1.0"

"""cadx: computer-aided diagnosis on medical images with deep convolutional networks."""

__version__ = "0.1.0"

"""Wan Desktop: offline Wan2.1 / Wan2.2 video generation on one consumer NVIDIA GPU.

The core package imports nothing heavy at import time (no torch, no Qt, no TensorRT): see
tests/test_architecture.py.
"""

__version__ = "0.1.0"

"""Pixel-space video utilities shared by interpolation and evaluation (OpenCV based)."""

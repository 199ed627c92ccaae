"""Pixels with numpy, OpenCV and PIL only: reading images and labels, palettes, test-time
augmentation around a scoring function, and metrics. Never imports paddle or the backend."""

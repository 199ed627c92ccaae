"""The model zoo: the registry of model configs, weights download and cache, and the official
(published) models by name."""

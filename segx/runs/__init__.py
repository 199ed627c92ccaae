"""The run folder a training writes (its files, config and checkpoints) and reading PaddleX /
PaddleSeg run folders."""

"""The Python API behind ``segx.create_model``: SegModel. Pipelines (segx/pipelines) sit on
the same floor."""

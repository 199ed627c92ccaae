"""Datasets in the reference layout (``train.txt``/``val.txt`` of ``<image> <label>`` lines):
reading lists (``layout``), decoding every file once (``scan``), the checks and label-encoding
detection (``checks``), the summary used by check_dataset and train (``analyse``), fixes into a
new folder (``fix``), LabelMe conversion (``labelme``), seeded re-splits (``split``) and the
report's pictures (``visualize``)."""

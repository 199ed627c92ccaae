"""One module per mode (``check_dataset``, ``train``, ...), each exposing ``run(cfg) -> dict``."""

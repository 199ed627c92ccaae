"""From a run folder to a deployable model: the static-graph export with its ONNX and OpenVINO
conversions, and int8 quantization."""

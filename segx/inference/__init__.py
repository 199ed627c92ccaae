"""From an input to a result: input expansion, preprocessing, the inference engines (paddle,
ONNX Runtime, OpenVINO: the one meaning of "engine" in segx), results and evaluation."""

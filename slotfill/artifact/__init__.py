"""A trained model on disk: the artifact (safetensors weights, vocabularies, manifest; ``artifact``), atomic
file writes (``files``), and its exports: the ONNX graph (``onnx_graph``, ``onnx_export``) and its int8 copy
(``onnx_quantize``)."""

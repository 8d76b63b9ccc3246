"""The bridge: carries a model from one framework to another through ONNX.

pipeline (the steps in order and their errors) -> tf_export / torch_export (source -> ONNX) -> onnx_rewrites and
opset_down (graph edits the importer needs) -> converters/ (the ops onnx2torch and tf2onnx lack, registered through
their own APIs) -> the ONNX -> torch import; cache keeps exported graphs between sessions; weight_matching finds which
tensor of the converted model holds which source weight. Nothing here decides a verdict.
"""

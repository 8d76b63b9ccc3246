"""Converters for ops the upstream converters lack, added only through their registration APIs (onnx2torch
``add_converter``, tf2onnx handlers). A new op goes here, one module per family; importing the module registers it."""

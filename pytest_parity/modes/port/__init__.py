"""Port mode: carry a source model's weights into a hand-written model in the other framework, through ONNX layouts.

ONNX's operator conventions are the neutral layout (Gemm W [out, in], Conv W [out, in/group, *kernel], LSTM W/R/B with
gates i,o,f,c, GRU z,r,h, ...). Each framework only knows its own layers <-> ONNX rules (``keras_layers``,
``torch_layers``), never the other framework's:

    source variables --export--> ONNX tensors --load--> target variables

Correspondence comes from structure: both models are run once with their parametrised layers recorded in the order they
are called; the i-th parametrised operation of the source pairs with the i-th of the target, and the pair must agree in
ONNX op type and tensor shapes (``transfer``). On a failed check, the recorded activations of the pairs are compared
to name the first layer that diverges and, where it can be told, why (``divergence``).
"""

"""Exports the TorchScript featurizer to ONNX for the ONNX Runtime peer row of `make bench`,
and checks the two agree on a random batch (prints the largest difference).

usage: export_onnx.py MODEL.pt OUT.onnx
"""
import sys

import numpy as np
import onnxruntime as ort
import torch

src, out = sys.argv[1], sys.argv[2]
model = torch.jit.load(src).eval()
x = torch.randn(4, 3, 224, 224)
# the TorchScript exporter (dynamo=False) takes the scripted file as it is
torch.onnx.export(
    model,
    (x,),
    out,
    dynamo=False,
    input_names=["x"],
    output_names=["features"],
    dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
    opset_version=17,
)
session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
with torch.no_grad():
    want = model(x).numpy()
got = session.run(None, {"x": x.numpy()})[0]
diff = float(np.abs(got - want).max())
assert got.shape == want.shape and diff < 1e-3, (got.shape, diff)
print(f"{diff:.2e}")

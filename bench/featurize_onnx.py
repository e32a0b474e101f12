"""The strongest peer script we measured: the same decode and resize as featurize_python.py,
the same featurizer exported to ONNX, run by ONNX Runtime (all graph optimisations, THREADS
intra-op threads), batch 32. Prints tiles/s (after one warm-up batch).

usage: featurize_onnx.py MODEL.onnx N_IMAGES THREADS IMAGE...
"""
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

model_path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = sys.argv[4:]
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
std = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load(p):
    im = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
    return x.transpose(2, 0, 1)


def run(count):
    done = 0
    while done < count:
        batch = [load(paths[(done + i) % len(paths)]) for i in range(min(32, count - done))]
        feats = session.run(None, {"x": np.ascontiguousarray(np.stack(batch))})[0]
        assert feats.shape[1] == 1280
        done += len(batch)


run(32)  # warm-up
t = time.perf_counter()
run(n)
print(f"{n / (time.perf_counter() - t):.1f}")

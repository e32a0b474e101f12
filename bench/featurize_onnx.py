"""The strongest peer script we measured: the same decode and resize as featurize_python.py,
the same featurizer exported to ONNX, run by ONNX Runtime (all graph optimisations, THREADS
intra-op threads), batch 32. Prints tiles/s (after one warm-up batch).

usage: featurize_onnx.py MODEL.onnx N_IMAGES THREADS IMAGE...
"""
import sys
import time

import numpy as np
import onnxruntime as ort

from preprocess import run

model_path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = sys.argv[4:]
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def features(batch):
    return session.run(None, {"x": np.ascontiguousarray(batch)})[0]


run(features, paths, 32)  # warm-up
t = time.perf_counter()
run(features, paths, n)
print(f"{n / (time.perf_counter() - t):.1f}")

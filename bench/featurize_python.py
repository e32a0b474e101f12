"""The script a user would write instead of our service: PIL decode + resize, the same
TorchScript featurizer, batch 32, fixed threads. Prints tiles/s (after one warm-up batch).

usage: featurize_python.py MODEL.pt N_IMAGES THREADS IMAGE...
"""
import sys
import time

import torch

from preprocess import run

model_path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = sys.argv[4:]
torch.set_num_threads(threads)
model = torch.jit.load(model_path).eval()


def features(batch):
    with torch.no_grad():
        return model(torch.from_numpy(batch))


run(features, paths, 32)  # warm-up
t = time.perf_counter()
run(features, paths, n)
print(f"{n / (time.perf_counter() - t):.1f}")

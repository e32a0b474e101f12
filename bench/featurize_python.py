"""The script a user would write instead of our service: PIL decode + resize, the same
TorchScript featurizer, batch 32, fixed threads. Prints tiles/s (after one warm-up batch).

usage: featurize_python.py MODEL.pt N_IMAGES THREADS IMAGE...
"""
import sys
import time

import numpy as np
import torch
from PIL import Image

model_path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = sys.argv[4:]
torch.set_num_threads(threads)
model = torch.jit.load(model_path).eval()
mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
std = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load(p):
    im = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
    return x.transpose(2, 0, 1)


def run(count):
    done = 0
    with torch.no_grad():
        while done < count:
            batch = [load(paths[(done + i) % len(paths)]) for i in range(min(32, count - done))]
            feats = model(torch.from_numpy(np.stack(batch)))
            assert feats.shape[1] == 1280
            done += len(batch)


run(32)  # warm-up
t = time.perf_counter()
run(n)
print(f"{n / (time.perf_counter() - t):.1f}")

"""The preprocessing of the peer scripts (featurize_python.py, featurize_onnx.py): what a
user's script would do, PIL decode + bilinear resize to 224 + ImageNet z-score, and their
batch loop."""
import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load(path):
    """One image as a CHW float32 array."""
    im = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)


def run(features, paths, count):
    """Featurizes `count` images (cycling over `paths`) in batches of 32 with `features`
    (an NCHW array to a feature array), checking the feature width."""
    done = 0
    while done < count:
        batch = [load(paths[(done + i) % len(paths)]) for i in range(min(32, count - done))]
        assert features(np.stack(batch)).shape[1] == 1280
        done += len(batch)

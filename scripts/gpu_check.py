#!/usr/bin/env python3
"""GPU check: the featurize / score models and one fine-tune epoch on a CUDA device.

Measures, on the first CUDA device, with the same model files the services load:
- featurize: MobileNetV2 TorchScript featurizer, batch 128 and 256, fp32 and fp16 autocast,
  input already preprocessed on the host (pinned), host->device copy included;
- score: the same plus a 1280->k logistic head and softmax, on tiles cut like the region's
  (45 px upsampled to 224), batch 128 and 256;
- one fine-tune epoch of MobileNetV2 `all` (the train service's recipe: SGD momentum 0.9
  Nesterov, wd 1e-4, lr 0.01 head / 0.001 pretrained, batch 32, flips and quarter turns) over
  1,960 samples (rsscn7's train size) drawn from the images given, fp32 and bf16 autocast,
  then validation accuracy on the val images given.

Writes a Markdown section (stdout and --out). Needs torch (+ torchvision for the fine-tune
network) and PIL. Runs on CPU too with --allow-cpu and small sizes, which is how it is tested.
"""
import argparse
import os
import platform
import random
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_images(root, per_class, size, down=None):
    """uint8 NCHW tensors and labels from root/<label>/*.jpg, resized as the services do."""
    labels = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    xs, ys = [], []
    for i, lab in enumerate(labels):
        files = sorted(os.listdir(os.path.join(root, lab)))[:per_class]
        for f in files:
            im = Image.open(os.path.join(root, lab, f)).convert("RGB")
            if down:  # a region-like tile: down to `down` px first
                im = im.resize((down, down), Image.BILINEAR)
            im = im.resize((size, size), Image.BILINEAR)
            xs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
            ys.append(i)
    return torch.stack(xs), torch.tensor(ys), labels


def normalise(u8):
    return (u8.float() / 255.0 - MEAN.to(u8.device)) / STD.to(u8.device)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n_items, dev, warm=3, reps=7):
    """Median items/s of `fn` over `reps` timed calls after `warm` warm-ups."""
    for _ in range(warm):
        fn()
    sync(dev)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return n_items / statistics.median(times), times


def featurize_rates(model, pool, dev, batch, head=None):
    rows = {}
    idx = torch.randint(0, pool.shape[0], (batch,), generator=torch.Generator().manual_seed(batch))
    host = normalise(pool[idx]).contiguous()
    if dev.type == "cuda":
        host = host.pin_memory()
    for prec in ("fp32", "fp16"):
        def step():
            x = host.to(dev, non_blocking=True)
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=prec == "fp16" and dev.type == "cuda"):
                f = model(x)
                if head is not None:
                    f = torch.softmax(head(f.float()), dim=1)
            return f.float().cpu()
        r, _ = rate(step, batch, dev)
        rows[prec] = r
    return rows


def check_features(model, dev, ref_dir):
    """Max abs difference of fp32 and fp16 features from the reference tensors (as in tests)."""
    inp = os.path.join(ref_dir, "ref_input_chelsea_coffee.npy")
    ref = os.path.join(ref_dir, "ref_features.npy")
    if not (os.path.exists(inp) and os.path.exists(ref)):
        return None
    x = torch.from_numpy(np.load(inp)).to(dev)
    want = torch.from_numpy(np.load(ref))
    out = {}
    with torch.inference_mode():
        out["fp32"] = (model(x).float().cpu() - want).abs().max().item()
        if dev.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                out["fp16"] = (model(x).float().cpu() - want).abs().max().item()
    return out


def augment(x):
    """Flips and quarter turns: tiles have no 'up' (as the train service's augmentation)."""
    if random.random() < 0.5:
        x = torch.flip(x, dims=[3])
    k = random.randint(0, 3)
    return torch.rot90(x, k, dims=[2, 3]) if k else x


def finetune_epoch(safetensors_path, train, val, dev, amp, samples, batch, seed):
    import torchvision
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    random.seed(seed)
    xs, ys, labels = train
    net = torchvision.models.mobilenet_v2()
    state = load_file(safetensors_path)
    missing, _ = net.load_state_dict(state, strict=False)
    assert all("num_batches_tracked" in m for m in missing), missing
    net.classifier[1] = torch.nn.Linear(1280, len(labels))
    net = net.to(dev).to(memory_format=torch.channels_last)
    head = list(net.classifier.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in net.parameters() if id(p) not in head_ids]
    lr = 0.01
    opt = torch.optim.SGD([{"params": body, "lr": lr * 0.1}, {"params": head, "lr": lr}],
                          momentum=0.9, nesterov=True, weight_decay=1e-4)
    steps = samples // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order = torch.randint(0, xs.shape[0], (steps * batch,), generator=torch.Generator().manual_seed(seed))
    net.train()
    sync(dev)
    t = time.perf_counter()
    step_times = []
    for s in range(steps):
        ts = time.perf_counter()
        i = order[s * batch:(s + 1) * batch]
        x = augment(normalise(xs[i].to(dev, non_blocking=True))).contiguous(memory_format=torch.channels_last)
        y = ys[i].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sync(dev)  # per-step times: the first steps include cuDNN's algorithm search
        step_times.append(time.perf_counter() - ts)
    secs = time.perf_counter() - t
    steady = batch / statistics.median(step_times[len(step_times) // 2:])
    net.eval()
    vx, vy, _ = val
    correct = 0
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        for j in range(0, vx.shape[0], 128):
            p = net(normalise(vx[j:j + 128].to(dev)).contiguous(memory_format=torch.channels_last))
            correct += (p.argmax(1).cpu() == vy[j:j + 128]).sum().item()
    return secs, steps * batch / secs, steady, correct / vx.shape[0], float(loss.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="folder with mobilenet_v2_featurizer.pt and mobilenet_v2.safetensors")
    ap.add_argument("--images", required=True, help="folder with train/<label>/* and val/<label>/*")
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--batches", default="128,256")
    ap.add_argument("--samples", type=int, default=1960, help="fine-tune samples per epoch")
    ap.add_argument("--out", default=None)
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no CUDA (tests)")
    a = ap.parse_args()

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        torch.backends.cudnn.benchmark = True
    elif a.allow_cpu:
        dev, name = torch.device("cpu"), "CPU (no CUDA)"
    else:
        sys.exit("gpu-check: no CUDA device (torch.cuda.is_available() is False)")
    t0 = time.perf_counter()
    model = torch.jit.load(os.path.join(a.models, "mobilenet_v2_featurizer.pt"), map_location=dev).eval()
    ref = check_features(model, dev, a.models)
    train = load_images(os.path.join(a.images, "train"), a.per_class, 224)
    val = load_images(os.path.join(a.images, "val"), a.per_class, 224)
    region_like = load_images(os.path.join(a.images, "train"), a.per_class, 224, down=45)[0]
    head = torch.nn.Linear(1280, len(train[2])).to(dev).eval()
    lines = [
        f"### GPU check: {name}",
        "",
        f"`scripts/gpu_check.py` (`make gpu-check`), torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"host {platform.machine()} with {os.cpu_count()} CPUs; {train[0].shape[0]} train / {val[0].shape[0]} val rsscn7 images "
        f"loaded ({a.per_class} per class). Medians of 7 timed batches after 3 warm-ups; host-to-device copy of the "
        "preprocessed batch included, JPEG decode and resize not (done once beforehand).",
        "",
    ]
    if ref:
        lines.append("Features vs the reference tensors (max abs diff): " + ", ".join(f"{k} {v:.2e}" for k, v in ref.items()))
        lines.append("")
    lines += ["| stage | batch | fp32 images/s | fp16 autocast images/s |", "|---|---:|---:|---:|"]
    for b in [int(s) for s in a.batches.split(",")]:
        f = featurize_rates(model, train[0], dev, b)
        s = featurize_rates(model, region_like, dev, b, head=head)
        lines.append(f"| featurize (MobileNetV2 features) | {b} | {f['fp32']:.0f} | {f['fp16']:.0f} |")
        lines.append(f"| score (features + logistic head, 45 px tiles upsampled) | {b} | {s['fp32']:.0f} | {s['fp16']:.0f} |")
        print("\n".join(lines[-2:]), flush=True)
    lines += ["", "| fine-tune `all`, one epoch, batch 32 | samples | seconds | samples/s (epoch) | samples/s (median step, 2nd half) | val accuracy after 1 epoch | last loss |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    st = os.path.join(a.models, "mobilenet_v2.safetensors")
    for amp in (False, True):
        secs, sps, steady, acc, loss = finetune_epoch(st, train, val, dev, amp, a.samples, 32, 7)
        lines.append(f"| {'bf16 autocast' if amp else 'fp32'} | {a.samples // 32 * 32} | {secs:.1f} | {sps:.0f} | {steady:.0f} | {acc:.4f} | {loss:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Whole check: {time.perf_counter() - t0:.0f} s. The epoch's seconds include CUDA start-up and "
              "cuDNN's algorithm search in its first steps; the median step of its second half is the steady rate. "
              "fp32 convolutions run as TF32 by default on this kind of GPU, hence the features' distance from the "
              "CPU reference.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()

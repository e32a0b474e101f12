"""A probe of #19's test-time augmentation, outside the product: backbone features (the
TorchScript featurizers the services run) of rsscn7 train and val under the 8 symmetries of the
square, scikit-learn's logistic regression (standardised, C chosen by 5-fold cross-validation
on train only, so val stays untouched), and validation accuracy of:
- train one view / val one view (what a run without views does);
- train one view / val's 8 views' features averaged;
- train one view / val's 8 views classified, probabilities averaged;
- train's 8 views' features averaged / val's likewise (training sees what inference feeds);
- train's 8 views as 8 samples each (augmentation) / val's probabilities averaged.
Features are cached in $CACHE (default /tmp/tta_probe) per backbone, so a second run is quick.

usage: [BACKBONES=mobilenet_v2,efficientnet_lite0] python bench/tta_probe.py ../shared
"""
import glob, os, sys, time
import numpy as np, torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(__file__))
from preprocess import load  # noqa: E402

torch.set_num_threads(2)
root = sys.argv[1]
cache = os.environ.get("CACHE", "/tmp/tta_probe")
os.makedirs(cache, exist_ok=True)
backbones = os.environ.get("BACKBONES", "mobilenet_v2").split(",")


def views(x):
    """The 8 symmetries of the square of an NCHW batch, in the services' order."""
    out = []
    for flip in (False, True):
        y = torch.flip(x, [3]) if flip else x
        for k in range(4):
            out.append(torch.rot90(y, k, [2, 3]))
    return out


def featurize(backbone, split):
    """[8 views, n, d] features and labels of a split, cached."""
    f = f"{cache}/{backbone}_{split}.npz"
    if os.path.exists(f):
        z = np.load(f)
        return z["x"], z["y"]
    m = torch.jit.load(f"{root}/models/{backbone}/{backbone}_featurizer.pt").eval()
    m = torch.jit.optimize_for_inference(torch.jit.freeze(m))
    labels = sorted(os.listdir(f"{root}/data/rsscn7/{split}"))
    paths, ys = [], []
    for i, l in enumerate(labels):
        for p in sorted(glob.glob(f"{root}/data/rsscn7/{split}/{l}/*.jpg")):
            paths.append(p)
            ys.append(i)
    t = time.time()
    chunks = []
    with torch.no_grad():
        for s in range(0, len(paths), 32):
            x = torch.from_numpy(np.stack([load(p) for p in paths[s:s + 32]]))
            chunks.append(np.stack([m(v).numpy() for v in views(x)]))
    x = np.concatenate(chunks, axis=1)
    print(f"{backbone} {split}: {len(paths)} images x 8 views in {time.time() - t:.0f} s",
          flush=True)
    np.savez(f, x=x, y=np.array(ys))
    return x, np.array(ys)


def fit(x, y):
    """Logistic regression with C chosen by 5-fold CV on (x, y) only."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    best = None
    for c in (0.01, 0.03, 0.1, 0.3):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        s = cross_val_score(clf, x, y, cv=folds).mean()
        if best is None or s > best[1]:
            best = (c, s)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=best[0], max_iter=3000))
    return clf.fit(x, y), best[0]


parts = [featurize(b, "train") for b in backbones], [featurize(b, "val") for b in backbones]
tr = np.concatenate([p[0] for p in parts[0]], axis=2)
ytr = parts[0][0][1]
va = np.concatenate([p[0] for p in parts[1]], axis=2)
yva = parts[1][0][1]
name = "+".join(backbones)


def acc(p):
    return (p.argmax(1) == yva).mean()


t = time.time()
clf, c = fit(tr[0], ytr)
print(f"{name} train one view (C {c}, {time.time() - t:.0f} s): val one view "
      f"{acc(clf.predict_proba(va[0])):.4f}, features averaged "
      f"{acc(clf.predict_proba(va.mean(0))):.4f}, probabilities averaged "
      f"{acc(np.mean([clf.predict_proba(v) for v in va], 0)):.4f}", flush=True)
t = time.time()
clf, c = fit(tr.mean(0), ytr)
print(f"{name} train features averaged (C {c}, {time.time() - t:.0f} s): val features "
      f"averaged {acc(clf.predict_proba(va.mean(0))):.4f}", flush=True)
# augmentation: CV folds must keep a tile's 8 views together, so C is the one-view choice
t = time.time()
clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
clf.fit(tr.reshape(-1, tr.shape[2]), np.tile(ytr, 8))
print(f"{name} train 8 views as samples (C {c}, {time.time() - t:.0f} s): val one view "
      f"{acc(clf.predict_proba(va[0])):.4f}, probabilities averaged "
      f"{acc(np.mean([clf.predict_proba(v) for v in va], 0)):.4f}, features averaged "
      f"{acc(clf.predict_proba(va.mean(0))):.4f}", flush=True)

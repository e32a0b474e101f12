#!/usr/bin/env python3
"""scikit-learn's logistic regression and random forest on the matrices classic_bench wrote
(the same feature vectors our fits used), one JSON line per fit. Single-threaded like ours.

usage: classic_sklearn.py DIR   (DIR/features.safetensors)
"""
import json
import sys
import time

from safetensors.numpy import load_file
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

t = load_file(sys.argv[1] + "/features.safetensors")
xt, yt, xv, yv = t["x_train"].astype("float64"), t["y_train"].astype(int), t["x_val"].astype("float64"), t["y_val"].astype(int)
fits = [
    ("scikit-learn LogisticRegression (lbfgs, C 1, standardised)", make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))),
    ("scikit-learn LogisticRegression (lbfgs, C 100, standardised)", make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=500))),
    # the same forest shape as ours: 100 trees, depth 10, 70 % bootstrap, 20 % of the features per tree
    ("scikit-learn RandomForestClassifier (100 trees, depth 10)", RandomForestClassifier(n_estimators=100, max_depth=10, max_samples=0.7, max_features=0.2, n_jobs=1, random_state=42)),
]
with threadpool_limits(1):
    for name, model in fits:
        s = time.perf_counter()
        model.fit(xt, yt)
        secs = time.perf_counter() - s
        print(json.dumps({"fit": name, "seconds": secs, "val_accuracy": float((model.predict(xv) == yv).mean())}), flush=True)

#!/usr/bin/env python3
"""Markdown table of classic_bench + classic_sklearn results: classic_table.py DIR CPU"""
import json, sys, datetime
d, cpu = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for f in ("ours.jsonl", "sklearn.jsonl") for l in open(f"{d}/{f}")]
first = rows[0]
print("## Classic classifiers vs scikit-learn\n")
print(f"Measured {datetime.date.today()} by `bench/classic.sh` on {cpu}, one thread each, the same "
      f"{first['train']} rsscn7 training and {first['val']} validation MobileNetV2 feature vectors "
      f"({first['dim']} columns) for every fit.\n")
print("| fit | seconds | validation accuracy |\n|---|---:|---:|")
for r in rows:
    print(f"| {r['fit']} | {r['seconds']:.2f} | {r['val_accuracy']:.4f} |")
by = {r['fit']: r for r in rows}
ours = next(r for r in rows if r['fit'].startswith('ours logistic (L-BFGS'))
sk = next(r for r in rows if 'LogisticRegression (lbfgs, C 1,' in r['fit'])
print(f"\n**Logistic: ours / scikit-learn time {ours['seconds'] / sk['seconds']:.2f}×, accuracy "
      f"{ours['val_accuracy']:.4f} vs {sk['val_accuracy']:.4f}.**", end="")
old = [r for r in rows if r['fit'].startswith('linfa')]
if old:
    print(f" linfa-logistic's fit (train before this version) took {old[0]['seconds']:.0f} s "
          f"({old[0]['seconds'] / ours['seconds']:.0f}× ours) for {old[0]['val_accuracy']:.4f}.", end="")
rf = next(r for r in rows if r['fit'].startswith('ours random forest'))
skrf = next(r for r in rows if 'RandomForest' in r['fit'])
print(f"\n\n**Random forest: ours / scikit-learn time {rf['seconds'] / skrf['seconds']:.2f}×, accuracy "
      f"{rf['val_accuracy']:.4f} vs {skrf['val_accuracy']:.4f}** (ours draws 20 % of the features per tree, "
      "linfa-ensemble's way; scikit-learn per split).\n")

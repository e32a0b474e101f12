//! Bench helper: `classic_bench DATASET BACKBONE OUT_DIR` reads a featurized labelled
//! dataset from the store (the usual `AERIAL__*` settings), fits our logistic regression and
//! random forest and linfa-logistic's fit (the one train used before, for the record) on its
//! train split, prints one JSON line per fit (seconds, validation accuracy), and writes the
//! same matrices to `OUT_DIR/features.safetensors` (`x_train`, `y_train`, `x_val`, `y_val`)
//! for `bench/classic_sklearn.py` to fit scikit-learn's on the very same numbers.

use aerial_model::classifier::{argmax_rows, ClassicModel, Standardizer};
use aerial_shared::{keys, manifest, shards, Settings, Store};
use linfa::prelude::*;
use ndarray::{Array1, Array2};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

fn accuracy(p: &Array2<f64>, y: &[usize]) -> f64 {
    let hits = argmax_rows(p).iter().zip(y).filter(|(a, b)| a == b).count();
    hits as f64 / y.len() as f64
}

fn tensor(name: &str, shape: Vec<usize>, data: &[f32]) -> (String, Vec<u8>, Vec<usize>) {
    let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name.to_string(), bytes, shape)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: classic_bench DATASET BACKBONE OUT_DIR"
    );
    let (dataset, backbone, out) = (&args[1], &args[2], std::path::Path::new(&args[3]));
    let store = Store::connect(&Settings::load(None)?.s3).await;
    let rows = manifest::load(&store, dataset).await?;
    let mut features: HashMap<String, Vec<f32>> = HashMap::new();
    let mut dim = 0;
    for o in store
        .list(&keys::feature_shards_prefix(dataset, backbone))
        .await?
    {
        let s = shards::decode(&store.get(&o.key).await?)?;
        dim = s.dim;
        for (i, id) in s.tile_ids.into_iter().enumerate() {
            features.insert(id, s.features[i * dim..(i + 1) * dim].to_vec());
        }
    }
    let labels: Vec<String> = rows
        .iter()
        .filter(|r| !r.label.is_empty())
        .map(|r| r.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let part = |split: &str| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.split == split && features.contains_key(&r.id))
        {
            x.extend_from_slice(&features[&r.id]);
            y.push(
                labels
                    .iter()
                    .position(|l| *l == r.label)
                    .expect("label listed"),
            );
        }
        (x, y)
    };
    let (xt, yt) = part("train");
    let (xv, yv) = part("val");
    anyhow::ensure!(
        !yt.is_empty() && !yv.is_empty(),
        "{dataset} has no featurized train/val tiles"
    );
    std::fs::create_dir_all(out)?;
    let yt_f: Vec<f32> = yt.iter().map(|&v| v as f32).collect();
    let yv_f: Vec<f32> = yv.iter().map(|&v| v as f32).collect();
    let ts = [
        tensor("x_train", vec![yt.len(), dim], &xt),
        tensor("y_train", vec![yt.len()], &yt_f),
        tensor("x_val", vec![yv.len(), dim], &xv),
        tensor("y_val", vec![yv.len()], &yv_f),
    ];
    let views: Vec<(String, safetensors::tensor::TensorView)> = ts
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    std::fs::write(
        out.join("features.safetensors"),
        safetensors::serialize(views, None)?,
    )?;
    let to64 = |x: &[f32], n: usize| {
        Array2::from_shape_vec((n, dim), x.iter().map(|&v| f64::from(v)).collect())
            .expect("rows × dim")
    };
    let (x_train, x_val) = (to64(&xt, yt.len()), to64(&xv, yv.len()));
    let k = labels.len();
    let report = |name: &str, secs: f64, acc: f64| {
        println!(
            "{}",
            serde_json::json!({"fit": name, "seconds": secs, "val_accuracy": acc,
                "train": yt.len(), "val": yv.len(), "dim": dim})
        );
    };
    for (name, l2) in [
        ("ours logistic (L-BFGS, l2 1 = C 1)", 1.0),
        ("ours logistic (l2 0.01 = C 100)", 0.01),
    ] {
        let t = Instant::now();
        let m = ClassicModel::fit_logistic(x_train.clone(), &yt, k, 500, l2)?;
        report(
            name,
            t.elapsed().as_secs_f64(),
            accuracy(&m.predict_proba(x_val.clone()), &yv),
        );
    }
    let t = Instant::now();
    let m = ClassicModel::fit_forest(x_train.clone(), &yt, k, 100, 10, 42)?;
    report(
        "ours random forest (100 trees, depth 10)",
        t.elapsed().as_secs_f64(),
        accuracy(&m.predict_proba(x_val.clone()), &yv),
    );
    if std::env::var("CLASSIC_BENCH_LINFA").as_deref() == Ok("1") {
        // the fit train ran before this version: linfa-logistic, alpha 0.01, 200 iterations
        let t = Instant::now();
        let mut xs = x_train.clone();
        let scaler = Standardizer::fit(&xs);
        scaler.apply(&mut xs);
        let model = linfa_logistic::MultiLogisticRegression::default()
            .max_iterations(200)
            .alpha(0.01)
            .fit(&Dataset::new(xs, Array1::from(yt.clone())))?;
        let secs = t.elapsed().as_secs_f64();
        let old = ClassicModel::Logistic {
            scaler,
            model,
            n_classes: k,
        };
        report(
            "linfa-logistic (alpha 0.01, 200 iterations; train before this version)",
            secs,
            accuracy(&old.predict_proba(x_val.clone()), &yv),
        );
    }
    Ok(())
}

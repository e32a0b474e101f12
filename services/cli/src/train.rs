//! `aerial train` and `aerial runs`: publish a training job, follow it, list runs.

use aerial_shared::{
    evaluation::Evaluation,
    keys,
    messages::{Method, Retraining, TrainJob, TrainParams, Tta},
    runs::{self, RunMetrics, RunSummary},
    topology, Broker, Settings, Store,
};
use clap::{Args, ValueEnum};
use std::time::Duration;

/// Method names on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// Multinomial logistic regression on frozen features.
    Logistic,
    /// Random forest on frozen features.
    RandomForest,
    /// Fine-tune the CNN.
    Finetune,
}

/// Retraining depth names.
#[derive(Clone, Copy, ValueEnum)]
pub enum RetrainingArg {
    /// The new classifier only.
    LastOnly,
    /// Classifier plus the final feature blocks.
    FullyConnected,
    /// Every layer.
    All,
}

/// Test-time augmentation names.
#[derive(Clone, Copy, ValueEnum)]
pub enum TtaArg {
    /// The tile as it is.
    None,
    /// The 8 symmetries of the square (8 × the inference work).
    D4,
}

/// `aerial train` arguments.
#[derive(Args)]
pub struct TrainArgs {
    /// Run name (unique).
    #[arg(long)]
    name: String,
    /// Labelled dataset, or several separated by commas (`rsscn7,region-labels`: their
    /// training tiles are learnt together; classic methods only).
    #[arg(long)]
    dataset: String,
    /// Backbone.
    #[arg(long, default_value = "mobilenet_v2")]
    backbone: String,
    /// Method.
    #[arg(long, value_enum)]
    method: MethodArg,
    /// Retraining depth (finetune).
    #[arg(long, value_enum)]
    retraining: Option<RetrainingArg>,
    /// Epochs (finetune) or L-BFGS iterations (logistic).
    #[arg(long)]
    epochs: Option<u32>,
    /// Minibatch (finetune).
    #[arg(long)]
    batch: Option<u32>,
    /// Learning rate (finetune) or L2 strength (logistic: scikit-learn's 1/C, on the summed
    /// loss of standardised features; default 1).
    #[arg(long)]
    lr: Option<f64>,
    /// Trees (random forest).
    #[arg(long)]
    trees: Option<u32>,
    /// Maximum tree depth (random forest).
    #[arg(long)]
    max_depth: Option<u32>,
    /// Stratified share of each class's training tiles.
    #[arg(long, default_value_t = 1.0)]
    sample_frac: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Test-time augmentation the run's model is validated, scored and evaluated with.
    #[arg(long, value_enum, default_value = "none")]
    tta: TtaArg,
    /// Train at a coarser ground resolution: every image box-downsampled to PX pixels a side
    /// before the resize to 224 (45 for the 225 m tiles of 5 m/px imagery), so the classifier
    /// learns what score will feed it; validation, test and `aerial evaluate` use the same.
    #[arg(long, value_name = "PX", conflicts_with = "degrade_for")]
    degrade_px: Option<u32>,
    /// Train at the resolution of a scene dataset this run will map: --degrade-px becomes
    /// the side of its tiles (45 for the region's 225 m tiles at 5 m/px; tiles of 224 px or
    /// more leave the images as they are).
    #[arg(long, value_name = "DATASET")]
    degrade_for: Option<String>,
    /// Keep this seeded share of each label's training tiles out of training and of model
    /// choice, and report the run's accuracy on it apart (the honest estimate for unseen
    /// images when hyper-parameters were chosen on the validation split).
    #[arg(long)]
    test_frac: Option<f64>,
    /// Fine-tune: spread this share of each target evenly over the classes (0.1 is usual).
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f64>,
    /// Fine-tune: blend each batch with a shuffled copy of itself, weights from Beta(α, α)
    /// (0.2 is usual).
    #[arg(long, value_name = "ALPHA")]
    mixup: Option<f64>,
    /// Return after publishing.
    #[arg(long)]
    no_wait: bool,
}

/// The job with every default filled in.
fn job(a: &TrainArgs) -> TrainJob {
    let method = match a.method {
        MethodArg::Logistic => Method::Logistic,
        MethodArg::RandomForest => Method::RandomForest,
        MethodArg::Finetune => Method::Finetune,
    };
    let (epochs, lr) = match method {
        // L2 = 1 / C with scikit-learn's default C = 1, not tuned on any validation split
        Method::Logistic => (500, 1.0),
        Method::RandomForest => (1, 0.0),
        Method::Finetune => (5, 0.01),
    };
    let forest = method == Method::RandomForest;
    TrainJob {
        run: a.name.clone(),
        dataset: a
            .dataset
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        also: a
            .dataset
            .split(',')
            .skip(1)
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect(),
        backbone: a.backbone.clone(),
        method,
        sample_frac: a.sample_frac,
        seed: a.seed,
        params: TrainParams {
            epochs: a.epochs.unwrap_or(epochs),
            batch: a.batch.unwrap_or(32),
            lr: a.lr.unwrap_or(lr),
            retraining: (method == Method::Finetune).then(|| {
                match a.retraining.unwrap_or(RetrainingArg::All) {
                    RetrainingArg::LastOnly => Retraining::LastOnly,
                    RetrainingArg::FullyConnected => Retraining::FullyConnected,
                    RetrainingArg::All => Retraining::All,
                }
            }),
            trees: forest.then(|| a.trees.unwrap_or(100)),
            max_depth: forest.then(|| a.max_depth.unwrap_or(10)),
            tta: match a.tta {
                TtaArg::None => Tta::None,
                TtaArg::D4 => Tta::D4,
            },
            degrade_px: a.degrade_px,
            label_smoothing: a.label_smoothing,
            mixup: a.mixup,
        },
        test_frac: a.test_frac,
    }
}

/// Publishes the job and, unless `--no-wait`, waits for the run and prints its metrics.
pub async fn run(settings: &Settings, args: TrainArgs) -> anyhow::Result<()> {
    keys::validate_run_name(&args.name)?;
    anyhow::ensure!(
        args.sample_frac > 0.0 && args.sample_frac <= 1.0,
        "--sample-frac must be in (0, 1]"
    );
    anyhow::ensure!(
        args.test_frac.is_none_or(|f| f > 0.0 && f < 1.0),
        "--test-frac must be in (0, 1)"
    );
    anyhow::ensure!(
        args.degrade_px.is_none_or(|px| (8..224).contains(&px)),
        "--degrade-px must be in 8..224 (the network reads 224 px)"
    );
    anyhow::ensure!(
        args.label_smoothing.is_none_or(|e| (0.0..1.0).contains(&e)),
        "--label-smoothing must be in [0, 1)"
    );
    anyhow::ensure!(
        args.mixup.is_none_or(|a| a > 0.0 && a.is_finite()),
        "--mixup must be a positive alpha"
    );
    anyhow::ensure!(
        (args.label_smoothing.is_none() && args.mixup.is_none())
            || matches!(args.method, MethodArg::Finetune),
        "--label-smoothing and --mixup apply to --method finetune"
    );
    let store = Store::connect(&settings.s3).await;
    store.ensure_bucket().await?;
    let mut args = args;
    if let Some(target) = &args.degrade_for {
        let r = crate::resolution::of_dataset(&store, target).await?;
        args.degrade_px = r.degrade_px();
        println!(
            "{target}: tiles of {} px for {:.0} m ({:.2} m/px): {}",
            r.px,
            r.metres,
            r.metres / f64::from(r.px),
            match args.degrade_px {
                Some(px) => format!("training at {px} px"),
                None => "training on the images as they are".into(),
            }
        );
    }
    let job = job(&args);
    println!("train job: {}", serde_json::to_string(&job)?);
    if store.exists(&runs::key(&job.run, runs::SUMMARY)).await? {
        println!("run {} already exists; its results:", job.run);
        return print_run(&store, &job.run).await;
    }
    store.delete(&runs::key(&job.run, runs::ERROR)).await?;
    let token = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&settings.amqp, "aerial-cli", &token).await?;
    broker.publisher().send(topology::TRAIN_JOBS, &job).await?;
    broker.close().await;
    println!("published run {}", job.run);
    if args.no_wait {
        return Ok(());
    }
    loop {
        match store.exists(&runs::key(&job.run, runs::SUMMARY)).await {
            Ok(true) => return print_run(&store, &job.run).await,
            Ok(false) => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(err) = store
            .get_json::<serde_json::Value>(&runs::key(&job.run, runs::ERROR))
            .await
        {
            anyhow::bail!(
                "run {} failed: {}",
                job.run,
                err["reason"].as_str().unwrap_or("unknown")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn print_run(store: &Store, run: &str) -> anyhow::Result<()> {
    let s: RunSummary = store.get_json(&runs::key(run, runs::SUMMARY)).await?;
    let m: RunMetrics = store.get_json(&runs::key(run, runs::METRICS)).await?;
    println!(
        "run {} ({} on {}) finished in {:.1}s on {} training tiles",
        s.run,
        s.method.as_str(),
        s.backbone,
        s.duration_s,
        s.train_tiles
    );
    print_evaluation(
        &m.validation,
        &store_labels(&m.validation),
        "validation tiles",
    );
    if let Some(t) = &m.test {
        // kept out of training and of every choice made on validation
        print_evaluation(
            t,
            &store_labels(t),
            "test tiles (held out of training and validation)",
        );
    }
    Ok(())
}

fn store_labels(e: &Evaluation) -> Vec<String> {
    e.per_class.iter().map(|c| c.label.clone()).collect()
}

/// Accuracy on `what` (e.g. "validation tiles"), per-class table and confusion matrix.
pub fn print_evaluation(e: &Evaluation, labels: &[String], what: &str) {
    println!(
        "accuracy {:.4} on {} {what} (macro F1 {:.4})",
        e.accuracy, e.total, e.macro_f1
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "f1", "support"
    );
    for c in &e.per_class {
        println!(
            "{:<14} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    println!("confusion (rows true, columns predicted):");
    print!("{:<14}", "");
    for l in labels {
        print!(" {:>6.6}", l);
    }
    println!();
    for (l, row) in labels.iter().zip(&e.confusion) {
        print!("{:<14}", l);
        for v in row {
            print!(" {v:>6}");
        }
        println!();
    }
}

/// `aerial runs`: every finished run, best first.
pub async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&settings.s3).await;
    let mut all = Vec::new();
    for o in store.list("runs/").await? {
        if o.key.ends_with(&format!("/{}", runs::SUMMARY)) {
            all.push(store.get_json::<RunSummary>(&o.key).await?);
        }
    }
    all.sort_by(|a, b| b.accuracy.total_cmp(&a.accuracy));
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|r| serde_json::json!({"name": r.run, "method": r.method, "backbone": r.backbone, "retraining": r.retraining, "accuracy": r.accuracy, "test_accuracy": r.test_accuracy, "duration_s": r.duration_s, "dataset": r.dataset}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<14} {:<18} {:<16} {:>8} {:>8} {:>10}",
        "run", "method", "backbone", "retraining", "accuracy", "test", "duration"
    );
    for r in &all {
        let depth = r
            .retraining
            .map(|d| format!("{d:?}"))
            .unwrap_or_else(|| "-".into());
        let test = r
            .test_accuracy
            .map(|t| format!("{t:.4}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<14} {:<18} {:<16} {:>8.4} {:>8} {:>9.1}s",
            r.run,
            r.method.as_str(),
            r.backbone,
            depth,
            r.accuracy,
            test,
            r.duration_s
        );
    }
    Ok(())
}

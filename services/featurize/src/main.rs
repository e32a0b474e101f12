//! aerial-featurize: consumes `featurize.tiles` ([`Tile`]) in batches, runs an
//! ImageNet-pretrained backbone on each batch on dedicated inference workers (CUDA when
//! present), writes one feature shard per batch to
//! `features/<dataset>/<backbone>/shards/`, publishes a `featurized` event, and acks only
//! after the shard is durable. Tiles that already have features (in the shards' headers) are
//! skipped; undecodable tiles go to the DLQ with their reason.
//!
//! [`Tile`]: aerial_shared::messages::Tile

mod handler;

use aerial_model::backbone;

use aerial_shared::{malloc, service, topology, worker};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    malloc::inference_runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    // `aerial-featurize bench-backbone MODELS_DIR N THREADS [d4]`: the backbone alone on
    // pre-made tensors, the ceiling the service is measured against; `bench-decode N
    // IMAGE...`: decode + preprocess alone on one core (make bench)
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("bench-backbone") => return bench_backbone(&args[2..]).await,
        Some("bench-decode") => return bench_decode(&args[2..]),
        _ => {}
    }
    let app = service::start("featurize").await?;
    if !app.ensure_bucket().await {
        return Ok(());
    }
    let load_hist = app.telemetry.model_load_seconds.clone();
    let inference = backbone::Inference::spawn(
        app.settings.models.dir.clone(),
        app.settings.worker.threads,
        move |s| load_hist.observe(s),
    );
    let handler = Arc::new(handler::Featurizer::new(
        app.store.clone(),
        inference,
        app.telemetry.clone(),
    ));
    let cfg =
        worker::WorkerConfig::from_settings(&app.settings, "featurize", topology::FEATURIZE_TILES);
    worker::run(
        &app.settings,
        cfg,
        handler,
        app.telemetry.clone(),
        app.shutdown.clone(),
    )
    .await;
    Ok(())
}

async fn bench_backbone(args: &[String]) -> anyhow::Result<()> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let models = std::path::PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("../shared/models"),
    );
    let n: usize = args.get(1).map_or(Ok(640), |s| s.parse())?;
    let threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    // `d4`: the 8-view test-time augmentation a run may ask for (tiles/s counts tiles)
    let tta = match args.get(3).map(String::as_str) {
        Some("d4") => aerial_shared::messages::Tta::D4,
        _ => aerial_shared::messages::Tta::None,
    };
    // the service's own inference workers, kept as busy as the service keeps them
    let inference = backbone::Inference::spawn(models, threads, |_| {});
    let input: Vec<f32> = (0..32 * 3 * 224 * 224)
        .map(|i| ((i % 255) as f32 / 255.0 - 0.45) / 0.225)
        .collect();
    let batch = || inference.features("mobilenet_v2", tta, input.clone(), 32);
    // warm-up: two batches per worker (the JIT profiles its first runs)
    let warm: FuturesUnordered<_> = (0..2 * threads).map(|_| batch()).collect();
    for r in warm.collect::<Vec<_>>().await {
        r?;
    }
    let t = std::time::Instant::now();
    let mut in_flight: FuturesUnordered<_> = (0..threads).map(|_| batch()).collect();
    let (mut sent, mut done) = (threads * 32, 0);
    while let Some(r) = in_flight.next().await {
        r?;
        done += 32;
        if sent < n {
            in_flight.push(batch());
            sent += 32;
        }
    }
    println!("{:.1}", done as f64 / t.elapsed().as_secs_f64());
    Ok(())
}

/// Decode + preprocess of `n` images (cycling through the files) on this one thread: the
/// per-tile CPU the service spends besides inference.
fn bench_decode(args: &[String]) -> anyhow::Result<()> {
    let n: usize = args.first().map_or(Ok(640), |s| s.parse())?;
    let files = args[1..]
        .iter()
        .map(std::fs::read)
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!files.is_empty(), "bench-decode N IMAGE...");
    let t = std::time::Instant::now();
    for i in 0..n {
        let x = aerial_shared::imaging::load_tensor(&files[i % files.len()])?;
        std::hint::black_box(x);
    }
    println!("{:.1}", n as f64 / t.elapsed().as_secs_f64());
    Ok(())
}

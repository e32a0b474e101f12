//! aerial-featurize: consumes `featurize.tiles` ([`Tile`]) in batches, runs an
//! ImageNet-pretrained backbone on each batch on a dedicated inference thread (CUDA when
//! present), writes one feature shard per batch to
//! `features/<dataset>/<backbone>/shards/` plus a per-tile marker, publishes a `featurized`
//! event, and acks only after the shard is durable. Tiles that already have features are
//! skipped; undecodable tiles go to the DLQ with their reason.
//!
//! [`Tile`]: aerial_shared::messages::Tile

mod handler;

use aerial_featurize::backbone;

use aerial_shared::{malloc, service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    malloc::tune_for_inference();
    // `aerial-featurize bench-backbone MODELS_DIR N THREADS`: the backbone alone on
    // pre-made tensors, the ceiling the service is measured against (make bench)
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bench-backbone") {
        return bench_backbone(&args[2..]);
    }
    let app = service::start("featurize", None).await?;
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

fn bench_backbone(args: &[String]) -> anyhow::Result<()> {
    let models = std::path::PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("../shared/models"),
    );
    let n: usize = args.get(1).map_or(Ok(640), |s| s.parse())?;
    let threads: i32 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    tch::set_num_threads(threads);
    let device = tch::Device::cuda_if_available();
    let m = backbone::load(&models, "mobilenet_v2", device)?;
    let input: Vec<f32> = (0..32 * 3 * 224 * 224)
        .map(|i| ((i % 255) as f32 / 255.0 - 0.45) / 0.225)
        .collect();
    backbone::run(&m, device, &input, 32)?; // warm-up
    let t = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        backbone::run(&m, device, &input, 32)?;
        done += 32;
    }
    println!("{:.1}", done as f64 / t.elapsed().as_secs_f64());
    Ok(())
}

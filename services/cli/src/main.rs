//! `aerial`: publishes jobs to the pipeline and reads their progress and results from S3.

mod accuracy;
mod evaluate;
mod features;
mod ingest;
mod resolution;
mod schemas;
mod score;
mod status;
mod train;

use aerial_shared::Settings;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The aerial command line.
#[derive(Parser)]
#[command(
    name = "aerial",
    version,
    about = "Land-use classification of aerial imagery: publish jobs, follow them, read results"
)]
struct Cli {
    /// Settings file (TOML); AERIAL__* environment variables override it.
    #[arg(long, global = true, env = "AERIAL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload input and publish an ingest job.
    #[command(subcommand)]
    Ingest(ingest::IngestCmd),
    /// Show the progress of one job, or of every job.
    Status {
        /// Job id; all jobs when omitted.
        job: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Count the tiles of a dataset that have feature vectors.
    Features {
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// Backbone.
        #[arg(long, default_value = "mobilenet_v2")]
        backbone: String,
    },
    /// Train a classifier (publishes a train job and follows it).
    Train(train::TrainArgs),
    /// Score a labelled folder (`<label>/*.jpg`) with a run's model and report accuracy.
    Evaluate {
        /// Run name.
        #[arg(long)]
        run: String,
        /// Folder with one sub-folder per label.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List finished runs, best first.
    Runs {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score a dataset (region) with a run's model (publishes a score job and follows it).
    Score(score::ScoreArgs),
    /// Where a score job's outputs are, and its per-class summary.
    Results {
        /// Job id.
        job: String,
        /// Download every output file into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead, report the change between two dates (`--change 2009-08-18 2020-08-31`).
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
        change: Option<Vec<String>>,
        /// With --change: 3×3 plurality smoothing first.
        #[arg(long)]
        smooth: bool,
        /// Instead, the map's accuracy on the analysts' assessment labels (overall, user's,
        /// producer's, error-adjusted area per class, 95 % intervals).
        #[arg(long, conflicts_with = "change")]
        accuracy: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move queues declared by an earlier version (classic queues) to this version's quorum
    /// queues, keeping every waiting message. Run with the services stopped.
    MigrateQueues,
    /// Write (or check) the JSON Schema of every message type.
    Schemas {
        /// Output folder.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Fail if the files differ from the generated schemas instead of writing them.
        #[arg(long)]
        check: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Schemas { out, check } = &cli.cmd {
        return schemas::run(out, *check);
    }
    let settings = Settings::load(cli.config.as_deref())?;
    aerial_shared::telemetry::init_logs(&aerial_shared::config::TelemetrySettings {
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ..settings.telemetry.clone()
    });
    match cli.cmd {
        Cmd::Ingest(cmd) => ingest::run(&settings, cmd).await,
        Cmd::Status { job, json } => status::run(&settings, job.as_deref(), json).await,
        Cmd::Features { dataset, backbone } => features::run(&settings, &dataset, &backbone).await,
        Cmd::Train(args) => train::run(&settings, args).await,
        Cmd::Score(args) => score::run(&settings, args).await,
        Cmd::Results {
            job,
            accuracy: true,
            json,
            ..
        } => accuracy::run(&settings, &job, json).await,
        Cmd::Results {
            job,
            out,
            change,
            smooth,
            json,
            ..
        } => {
            let change = change.map(|d| (d[0].clone(), d[1].clone(), smooth));
            score::results(&settings, &job, out, change, json).await
        }
        Cmd::Evaluate { run, dir, json } => evaluate::run(&settings, &run, &dir, json).await,
        Cmd::Runs { json } => train::list(&settings, json).await,
        Cmd::MigrateQueues => {
            for m in aerial_shared::migrate::run(&settings.amqp).await? {
                let what = if m.redeclared {
                    format!("migrated to a quorum queue, {} messages kept", m.messages)
                } else if m.messages > 0 {
                    format!(
                        "up to date; {} messages of an interrupted migration put back",
                        m.messages
                    )
                } else {
                    "up to date".into()
                };
                println!("{:<18} {what}", m.queue);
            }
            Ok(())
        }
        Cmd::Schemas { .. } => unreachable!("handled above"),
    }
}

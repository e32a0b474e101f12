//! `aerial score` and `aerial results`: publish a score job, follow it, and read its outputs.

use aerial_shared::{
    change, keys,
    messages::ScoreJob,
    predictions::{self, ScoreSummary},
    status::{JobState, JobStatus},
    store::StoreError,
    topology, Broker, Settings, Store,
};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// `aerial score` arguments.
#[derive(Args)]
pub struct ScoreArgs {
    /// Run whose model scores.
    #[arg(long)]
    run: String,
    /// Dataset (region) to score.
    #[arg(long)]
    dataset: String,
    /// Job id (default: `<dataset>-<run>`).
    #[arg(long)]
    name: Option<String>,
    /// 3×3 plurality smoothing of each date's map before the change report.
    #[arg(long)]
    smooth: bool,
    /// Return after publishing.
    #[arg(long)]
    no_wait: bool,
}

/// Publishes the job and, unless `--no-wait`, follows it and prints its results.
pub async fn run(settings: &Settings, a: ScoreArgs) -> anyhow::Result<()> {
    let job = ScoreJob {
        job_id: a.name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                a.dataset,
                keys::encode_name(&a.run).replace('%', "_")
            )
        }),
        run: a.run.clone(),
        dataset: a.dataset.clone(),
        smooth: a.smooth,
    };
    keys::validate_name(&job.job_id)?;
    keys::validate_name(&job.dataset)?;
    keys::validate_run_name(&job.run)?;
    let store = Store::connect(&settings.s3).await;
    store.ensure_bucket().await?;
    // `<dataset>-<run>` can name two requests (`a-b` + `c`, `a` + `b-c`): the spec says whose
    if let Ok(spec) = store
        .get_json::<aerial_shared::predictions::ScoreSpec>(&keys::score_spec(&job.job_id))
        .await
    {
        if let Some(why) = spec.conflict(&job) {
            anyhow::bail!("{why}");
        }
    }
    match store
        .get_json::<JobStatus>(&keys::job_status(&job.job_id))
        .await
    {
        Ok(st) if st.state == JobState::Done => {
            println!("job {} already done; its results:", job.job_id);
            return results(settings, &job.job_id, None, None, false).await;
        }
        Ok(st) if st.state == JobState::Running => {
            println!("job {} is running; following it", job.job_id);
        }
        _ => {
            // a failed job with this name is replaced by the new request
            store.delete(&keys::job_status(&job.job_id)).await?;
            let token = aerial_shared::shutdown::Token::new();
            let broker = Broker::connect_with_retry(&settings.amqp, "aerial-cli", &token).await?;
            broker.publisher().send(topology::SCORE_JOBS, &job).await?;
            broker.close().await;
            println!(
                "published score job {} (run {}, dataset {}{})",
                job.job_id,
                job.run,
                job.dataset,
                if job.smooth { ", smoothed" } else { "" }
            );
        }
    }
    if a.no_wait {
        println!("follow it with: aerial status {}", job.job_id);
        return Ok(());
    }
    let mut last = String::new();
    loop {
        match store
            .get_json::<JobStatus>(&keys::job_status(&job.job_id))
            .await
        {
            Ok(st) => {
                let line = crate::status::line(&st);
                if line != last {
                    println!("{line}");
                    last = line;
                }
                match st.state {
                    JobState::Done => break,
                    JobState::Failed => anyhow::bail!(
                        "score job {} failed: {}",
                        job.job_id,
                        st.error.unwrap_or_default()
                    ),
                    JobState::Running => {}
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    results(settings, &job.job_id, None, None, false).await
}

/// Prints where each output is and the per-class summary; optionally downloads the outputs
/// and recomputes the change report between two given dates.
pub async fn results(
    settings: &Settings,
    job: &str,
    out: Option<PathBuf>,
    change_dates: Option<(String, String, bool)>,
    json: bool,
) -> anyhow::Result<()> {
    keys::validate_name(job)?;
    let store = Store::connect(&settings.s3).await;
    let summary: ScoreSummary = match store
        .get_json(&keys::job_output(job, keys::OUTPUT_SUMMARY))
        .await
    {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => {
            anyhow::bail!("job {job} has no results yet (see `aerial status {job}`)")
        }
        Err(e) => return Err(e.into()),
    };
    if let Some((from, to, smooth)) = change_dates {
        let table = store
            .get(&keys::job_output(job, keys::OUTPUT_TABLE))
            .await?;
        let rows = predictions::from_csv(&table)?;
        let grids = change::grids_by_date(
            &summary.labels,
            rows.iter()
                .filter_map(|r| Some((r.date.as_str(), r.row?, r.col?, r.label.as_str()))),
        );
        let (a, b) = match (grids.get(&from), grids.get(&to)) {
            (Some(a), Some(b)) => (a, b),
            _ => anyhow::bail!(
                "dates must be among: {}",
                grids.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let report = change::compare(&summary.labels, &from, a, &to, b, smooth);
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_change(&report);
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, store.bucket());
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        for name in &summary.outputs {
            let bytes = store.get(&keys::job_output(job, name)).await?;
            std::fs::write(dir.join(name), &bytes)?;
        }
        println!("outputs downloaded to {}", dir.display());
    }
    Ok(())
}

fn print_change(r: &change::ChangeReport) {
    println!(
        "{} -> {}{}: {} of {} tiles changed class",
        r.from_date,
        r.to_date,
        if r.smoothed {
            " (3x3 plurality smoothed)"
        } else {
            ""
        },
        r.changed.len(),
        r.compared
    );
    println!("{:<14} {:>10} {:>10}", "tiles", r.from_date, r.to_date);
    for (l, n) in &r.tiles_from {
        println!(
            "{:<14} {:>10} {:>10}",
            l,
            n,
            r.tiles_to.get(l).copied().unwrap_or(0)
        );
    }
    for (from, to) in &r.transitions {
        for (label, n) in to {
            println!("  {from} -> {label}: {n} tiles");
        }
    }
}

fn print_summary(s: &ScoreSummary, bucket: &str) {
    println!(
        "job {}: run {} on {}: {} of {} tiles predicted, {} refused, {:.1}s, {} replica(s)",
        s.job_id,
        s.run,
        s.dataset,
        s.predicted,
        s.total,
        s.dead.len(),
        s.duration_s,
        s.replicas.len()
    );
    for d in &s.dead {
        println!("  refused {}: {}", d.tile_id, d.reason);
    }
    let with_area = !s.area_km2_per_date.is_empty();
    println!(
        "{} per class and date:",
        if with_area { "area (km²)" } else { "tiles" }
    );
    print!("{:<12}", "date");
    for l in &s.labels {
        print!(" {:>10.10}", l);
    }
    println!();
    for (date, counts) in &s.tiles_per_date {
        print!("{:<12}", if date.is_empty() { "-" } else { date });
        for l in &s.labels {
            if with_area {
                let a = s
                    .area_km2_per_date
                    .get(date)
                    .and_then(|m| m.get(l))
                    .copied()
                    .unwrap_or(0.0);
                print!(" {a:>10.2}");
            } else {
                print!(" {:>10}", counts.get(l).copied().unwrap_or(0));
            }
        }
        println!();
    }
    println!("outputs:");
    for name in &s.outputs {
        println!("  s3://{bucket}/{}", keys::job_output(&s.job_id, name));
    }
}

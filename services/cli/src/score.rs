//! `aerial score` and `aerial results`: publish a score job, follow it, and read its outputs.

use aerial_shared::{
    cells, change, keys,
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
    /// Windows of the tile size every this many metres (rounded to whole pixels; default:
    /// the tiles themselves): each map cell is one stride and averages the windows covering
    /// it. A finer map costs (tile size / stride)² as many windows to score.
    #[arg(long, value_name = "METRES")]
    stride_meters: Option<f64>,
    /// Return after publishing.
    #[arg(long)]
    no_wait: bool,
}

/// Publishes the job and, unless `--no-wait`, follows it and prints its results.
pub async fn run(settings: &Settings, a: ScoreArgs) -> anyhow::Result<()> {
    if let Some(m) = a.stride_meters {
        anyhow::ensure!(
            m.is_finite() && m > 0.0,
            "--stride-meters must be a positive number of metres, not {m}"
        );
    }
    let job = ScoreJob {
        job_id: a.name.clone().unwrap_or_else(|| {
            let stride = a.stride_meters.map_or(String::new(), |m| format!("-s{m}"));
            format!(
                "{}-{}{stride}",
                a.dataset,
                keys::encode_name(&a.run).replace('%', "_")
            )
        }),
        run: a.run.clone(),
        dataset: a.dataset.clone(),
        smooth: a.smooth,
        stride_m: a.stride_meters,
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
                "published score job {} (run {}, dataset {}{}{})",
                job.job_id,
                job.run,
                job.dataset,
                job.stride_m
                    .map_or(String::new(), |m| format!(", stride {m} m")),
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
        let mut rows = predictions::from_csv_with_probs(&table, &summary.labels)?;
        if summary.stride.is_none() {
            // a tile is its own cell: its class is the table's label, exactly as the job
            // mapped it (the table's probabilities are rounded, and a near-tie could flip)
            for (r, p) in &mut rows {
                for (k, v) in p.iter_mut().enumerate() {
                    *v = if summary.labels[k] == r.label {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
        }
        // the map's cells, as the job built them (a strided job's cells average its windows)
        let grids = cells::job_grids(
            summary.labels.len(),
            summary.stride.as_ref(),
            summary.extent,
            &summary.holes,
            rows.iter()
                .filter_map(|(r, p)| Some((r.date.as_str(), r.row?, r.col?, p.as_slice()))),
        );
        let (a, b) = match (grids.get(&from), grids.get(&to)) {
            (Some(a), Some(b)) => (a.classes(), b.classes()),
            _ => anyhow::bail!(
                "dates must be among: {}",
                grids.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let report = change::compare(
            &summary.labels,
            &from,
            &a,
            &to,
            &b,
            smooth,
            summary.cell_area_ha(),
        );
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let unit = if summary.stride.is_some() {
                "cells"
            } else {
                "tiles"
            };
            print_change(&summary.labels, unit, &report);
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
            // names come from the job's summary: only plain relative paths are written
            let plain = std::path::Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            anyhow::ensure!(plain, "job {job} lists an unsafe output name {name:?}");
            let bytes = store.get(&keys::job_output(job, name)).await?;
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &bytes)?;
        }
        println!("outputs downloaded to {}", dir.display());
    }
    Ok(())
}

/// `unit`: what a cell is (`tiles`, or `cells` of a strided job).
fn print_change(labels: &[String], unit: &str, r: &change::ChangeReport) {
    println!(
        "{} -> {}{}: {} of {} {unit} changed class",
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
    println!("{:<14} {:>10} {:>10}", unit, r.from_date, r.to_date);
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
            println!("  {from} -> {label}: {n} {unit}");
        }
    }
    if let Some(m) = r.matrix_ha(labels) {
        println!(
            "from -> to matrix, hectares (rows {}, columns {}; a cell is {:.2} ha):",
            r.from_date,
            r.to_date,
            r.cell_area_ha.unwrap_or_default()
        );
        let w = labels.iter().map(String::len).max().unwrap_or(4).max(10);
        print!("{:<w$}", "");
        for l in labels {
            print!(" {l:>w$}");
        }
        println!(" {:>w$}", "total");
        for (from, row) in &m {
            print!("{from:<w$}");
            for v in row {
                print!(" {v:>w$.1}");
            }
            println!(" {:>w$.1}", row.iter().sum::<f64>());
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
    let skipped: u64 = s.nodata_windows.values().sum();
    match s.stride {
        Some(st) => println!(
            "windows of {} px every {} px: map cells of {:.1} m ({} window(s) left out as no-data)",
            st.window_px,
            st.stride_px,
            st.cell_m(),
            skipped
        ),
        None if skipped > 0 => println!(
            "{skipped} tile(s) left out as no-data (over AERIAL__SCORE__MAX_NODATA of their pixels)"
        ),
        None => {}
    }
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

//! `aerial results JOB --accuracy`: the job's map assessed on the analysts' labels
//! (stratified estimators of Olofsson et al. 2014), recomputed from what S3 holds now.

use aerial_shared::{
    accuracy::{Assessment, Estimate},
    assessment, keys, labels,
    predictions::ScoreSummary,
    Settings, Store,
};

fn est(e: Option<Estimate>, pct: bool) -> String {
    match e {
        None => "-".into(),
        Some(e) => {
            let k = if pct { 100.0 } else { 1.0 };
            let ci = e
                .ci95
                .map(|c| format!(" ± {:.1}", c * k))
                .unwrap_or_default();
            format!("{:.1}{ci}{}", e.value * k, if pct { " %" } else { "" })
        }
    }
}

/// Prints (or, with `json`, dumps) every assessment of the job's dataset against its map.
pub async fn run(settings: &Settings, job: &str, json: bool) -> anyhow::Result<()> {
    keys::validate_name(job)?;
    let store = Store::connect(&settings.s3).await;
    let summary: ScoreSummary = store
        .get_json(&keys::job_output(job, keys::OUTPUT_SUMMARY))
        .await
        .map_err(|e| anyhow::anyhow!("job {job} has no results: {e}"))?;
    let table = store
        .get(&keys::job_output(job, keys::OUTPUT_TABLE))
        .await?;
    let cells = labels::map_cells(&table, &summary.labels).map_err(anyhow::Error::msg)?;
    let all = assessment::map_accuracy(&store, &summary.dataset, job, &cells).await?;
    anyhow::ensure!(
        !all.is_empty(),
        "no assessment sample of {} yet: draw one on the job's labelling page (/jobs/{job}/label?mode=assess)",
        summary.dataset
    );
    for m in all.iter().filter(|_| !json) {
        println!(
            "sample {} (date {}, drawn from job {}, seed {}): {} of {} tiles labelled",
            m.design, m.date, m.drawn_from, m.seed, m.labelled, m.sample
        );
        println!(
            "  overall accuracy of {job}: {}",
            est(m.overall_this_map, true)
        );
        if let Some(a) = &m.assessment {
            print_table(a);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

/// The per-class table of an assessment, then what its estimates leave out.
fn print_table(a: &Assessment) {
    println!(
        "  {:<14} {:>7} {:>7} {:>12} {:>22} {:>16} {:>16}",
        "class", "mapped", "sampled", "mapped ha", "estimated ha (95 %)", "user's", "producer's"
    );
    for c in &a.per_class {
        println!(
            "  {:<14} {:>7} {:>7} {:>12.1} {:>22} {:>16} {:>16}",
            c.class,
            c.mapped_units,
            c.sampled,
            c.mapped_area,
            est(Some(c.area), false),
            est(c.users, true),
            est(c.producers, true)
        );
    }
    if !a.single_unit_strata.is_empty() {
        println!(
            "  one labelled tile only (no interval where it counts): {}",
            a.single_unit_strata.join(", ")
        );
    }
    if !a.unsampled_strata.is_empty() {
        println!(
            "  not sampled (left out): {}",
            a.unsampled_strata.join(", ")
        );
    }
}

//! `aerial results JOB --accuracy`: the job's map assessed on the analysts' labels
//! (stratified estimators of Olofsson et al. 2014), recomputed from what S3 holds now.

use aerial_shared::{
    accuracy::Estimate, assessment, keys, labels, predictions::ScoreSummary, Settings, Store,
};
use std::collections::HashMap;

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
    let names = assessment::designs(&store, &summary.dataset).await?;
    anyhow::ensure!(
        !names.is_empty(),
        "no assessment sample of {} yet: draw one on the job's labelling page (/jobs/{job}/label?mode=assess)",
        summary.dataset
    );
    let mut all = Vec::new();
    for name in names {
        let d = assessment::design(&store, &summary.dataset, &name).await?;
        let refs = assessment::references(&store, &d).await?;
        let ours: HashMap<String, String> = cells
            .iter()
            .filter(|c| c.date == d.date)
            .map(|c| (c.tile_id.clone(), c.label.clone()))
            .collect();
        let overall = assessment::overall_of_map(&d, &refs, &ours);
        let full = (d.job == job)
            .then(|| assessment::assess_design(&d, &refs).ok())
            .flatten();
        if !json {
            println!(
                "sample {} (date {}, drawn from job {}, seed {}): {} of {} tiles labelled",
                d.name,
                d.date,
                d.job,
                d.seed,
                refs.len(),
                d.tiles.len()
            );
            println!("  overall accuracy of {job}: {}", est(overall, true));
            if let Some(a) = &full {
                println!(
                    "  {:<14} {:>7} {:>7} {:>12} {:>22} {:>16} {:>16}",
                    "class",
                    "mapped",
                    "sampled",
                    "mapped ha",
                    "estimated ha (95 %)",
                    "user's",
                    "producer's"
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
        }
        all.push(serde_json::json!({"design": d.name, "date": d.date, "drawn_from": d.job,
            "labelled": refs.len(), "sample": d.tiles.len(), "overall_this_map": overall, "assessment": full}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

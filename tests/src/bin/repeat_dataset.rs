//! Bench helper: `repeat_dataset FROM TO TIMES [FIRST]` writes a manifest for dataset TO that
//! lists FROM's tiles (only the first FIRST, in id order, when given) TIMES times, each
//! repetition stacked below the previous one in the tile grid (ids `rep<k>/<id>`), so a
//! region of 3,200 tiles becomes a county-sized job, or a few of its tiles a warm-up job,
//! without uploading anything again. Reads the usual `AERIAL__*` settings.

use aerial_shared::{keys, manifest, Settings, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4 || args.len() == 5,
        "usage: repeat_dataset FROM TO TIMES [FIRST]"
    );
    let (from, to, times): (&str, &str, u32) = (&args[1], &args[2], args[3].parse()?);
    let first: Option<usize> = args.get(4).map(|a| a.parse()).transpose()?;
    keys::validate_name(to)?;
    let store = Store::connect(&Settings::load(None)?.s3).await;
    let mut rows = manifest::load(&store, from).await?;
    if let Some(n) = first {
        rows.truncate(n);
    }
    anyhow::ensure!(!rows.is_empty(), "dataset {from} has no tiles");
    let height = rows.iter().filter_map(|r| r.row).max().unwrap_or(0) + 1;
    let mut out = Vec::with_capacity(rows.len() * times as usize);
    for k in 0..times {
        for r in &rows {
            let mut r = r.clone();
            r.id = format!("rep{k:03}/{}", r.id);
            r.row = r.row.map(|v| v + k * height);
            out.push(r);
        }
    }
    store
        .put(&keys::manifest_part(to, "repeat"), manifest::to_csv(&out))
        .await?;
    println!("{to}: {} tiles ({} x {})", out.len(), rows.len(), times);
    Ok(())
}

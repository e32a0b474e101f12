//! `aerial features`: how many tiles of a dataset have feature vectors, read from the shards.

use aerial_shared::{keys, shards, Settings, Store};

/// Prints rows, columns and shard count of a dataset's features.
pub async fn run(settings: &Settings, dataset: &str, backbone: &str) -> anyhow::Result<()> {
    let store = Store::connect(&settings.s3).await;
    let prefix = keys::feature_shards_prefix(dataset, backbone);
    let mut ids = std::collections::HashSet::new();
    let mut dims = std::collections::BTreeSet::new();
    let list = store.list(&prefix).await?;
    for o in &list {
        let s = shards::decode(&store.get(&o.key).await?)?;
        dims.insert(s.dim);
        ids.extend(s.tile_ids);
    }
    let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
    println!(
        "{dataset}/{backbone}: {} tiles with features, {} columns, {} shards under s3://{}/{prefix}",
        ids.len(),
        if dims.is_empty() { "0".into() } else { dims.join("/") },
        list.len(),
        store.bucket()
    );
    Ok(())
}

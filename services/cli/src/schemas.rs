//! `aerial schemas`: the JSON Schemas of the message types, for users publishing from their
//! own tools.

use std::path::Path;

/// Writes `<name>.schema.json` per message type, or checks the folder is current.
pub fn run(out: &Path, check: bool) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    if !check {
        std::fs::create_dir_all(out)?;
    }
    for (name, text) in aerial_shared::messages::schemas() {
        let path = out.join(format!("{name}.schema.json"));
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        anyhow::bail!(
            "schemas out of date (run `aerial schemas`): {}",
            stale.join(", ")
        );
    }
    Ok(())
}

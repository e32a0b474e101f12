//! The committed JSON Schemas (`schemas/`) must match the Rust message types.

#[test]
fn committed_schemas_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for (name, text) in aerial_shared::messages::schemas() {
        let path = dir.join(format!("{name}.schema.json"));
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == text,
            "{} is stale: run `make schemas`",
            path.display()
        );
    }
}

#[test]
fn schema_requires_version() {
    let (_, text) = aerial_shared::messages::schemas()
        .into_iter()
        .find(|(n, _)| *n == "ingest_job")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let required: Vec<&str> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(required.contains(&"schema_version"), "{required:?}");
    assert!(required.contains(&"job_id"));
}

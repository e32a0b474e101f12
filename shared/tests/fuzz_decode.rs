//! Property-based fuzzing of message decoding (proptest): arbitrary bytes, arbitrary JSON and
//! valid messages with random bytes changed never panic, for every message type; whatever
//! decodes re-encodes to a message that decodes again; keys and names from a message never
//! pass validation with `..`, absolute paths or control characters.

use aerial_shared::keys;
use aerial_shared::messages::{
    decode, encode, Event, IngestJob, Message, ScoreJob, ScoreProgress, ScoreTile, Tile, TrainJob,
};
use proptest::prelude::*;

/// Decodes `bytes` as `M`; if it decodes, its re-encoding decodes too.
fn roundtrip<M: Message>(bytes: &[u8]) {
    if let Ok(m) = decode::<M>(bytes) {
        let again = encode(&m);
        decode::<M>(&again).expect("a decoded message re-encodes to a decodable one");
    }
}

fn all_types(bytes: &[u8]) {
    roundtrip::<IngestJob>(bytes);
    roundtrip::<Tile>(bytes);
    roundtrip::<TrainJob>(bytes);
    roundtrip::<ScoreJob>(bytes);
    roundtrip::<ScoreProgress>(bytes);
    roundtrip::<ScoreTile>(bytes);
    roundtrip::<Event>(bytes);
}

/// Arbitrary JSON values, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schema_version".to_string()),
                    Just("tile_id".to_string()),
                    Just("key".to_string()),
                    Just("dataset".to_string()),
                    ".{0,8}".prop_map(String::from),
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid tile message as JSON bytes.
fn valid_tile() -> Vec<u8> {
    br#"{"schema_version":1,"dataset":"d","tile_id":"forest/a.jpg","key":"tiles/ab/abcd.jpg","sha256":"abcd","label":"forest","split":"train"}"#.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_types(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json(), version in prop_oneof![Just(1u64), any::<u64>()]) {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("schema_version".into(), version.into());
        }
        all_types(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_tile();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        all_types(&bytes);
        let end = cut.index(bytes.len());
        all_types(&bytes[..end]);
    }

    #[test]
    fn unsafe_keys_from_messages_are_refused(
        a in "[a-z]{0,5}",
        b in "[a-z]{0,5}",
        bad in prop_oneof![Just("/../"), Just("/./"), Just("\n"), Just("\\"), Just("\u{7f}")],
    ) {
        let key = format!("{a}{bad}{b}");
        prop_assert!(keys::validate(&key).is_err(), "{key:?} passed");
        let abs = format!("/{a}/{b}");
        prop_assert!(keys::validate(&abs).is_err(), "{abs:?} passed");
    }
}

#[test]
fn the_valid_tile_decodes() {
    let t: Tile = decode(&valid_tile()).unwrap();
    assert_eq!(t.tile_id, "forest/a.jpg");
}

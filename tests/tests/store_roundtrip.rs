//! The shared store client against the real SeaweedFS.

use aerial_shared::store::StoreError;
use aerial_tests::servers;

#[tokio::test]
async fn put_get_list_multipart_and_missing() {
    let iso = servers().isolated("store").await;
    let s = &iso.store;
    s.put("a/one.txt", b"one".to_vec()).await.unwrap();
    s.put("a/two.txt", b"two".to_vec()).await.unwrap();
    s.put("b/three.txt", b"three".to_vec()).await.unwrap();
    assert_eq!(&s.get("a/two.txt").await.unwrap()[..], b"two");
    let mut listed: Vec<_> = s
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("a/one.txt".to_string(), 3), ("a/two.txt".to_string(), 3)]
    );

    // 20 MB goes up in 8 MB parts and comes back byte-identical
    let big: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.put("big/blob.bin", big.clone()).await.unwrap();
    let back = s.get("big/blob.bin").await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back[..] == big[..], "multipart object differs");

    // byte ranges: inside, running past the end (cut short), and starting past it
    let r = s.get_range("big/blob.bin", 12_345_678, 1000).await.unwrap();
    assert!(r[..] == big[12_345_678..12_346_678]);
    assert_eq!(&s.get_range("b/three.txt", 3, 10).await.unwrap()[..], b"ee");
    match s.get_range("b/three.txt", 10, 4).await {
        Err(StoreError::RangeOutside { key, .. }) => assert_eq!(key, "b/three.txt"),
        other => panic!("expected range-outside, got {other:?}"),
    }

    match s.get("a/missing.txt").await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "a/missing.txt"),
        other => panic!("expected not-found, got {other:?}"),
    }
    assert!(!s.exists("a/missing.txt").await.unwrap());
    assert!(s.exists("a/one.txt").await.unwrap());
    assert!(matches!(
        s.get("../etc/passwd").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.put("/abs", b"x".to_vec()).await,
        Err(StoreError::InvalidKey(_))
    ));
    iso.cleanup().await;
}

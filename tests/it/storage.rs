//! The storage contract, run against S3 (moto, signature checks on).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_meets_the_storage_contract() {
    let store = s3().store().await;
    recvault::store::contract::run(store.as_ref(), &unique_prefix("contract")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_wrong_credentials_fails_cleanly_and_the_server_says_so() {
    let prefix = unique_prefix("badcreds");
    let s3 = s3();
    let cfg = recvault::config::parse(&s3.storage_toml(), "test")
        .unwrap()
        .storage;
    let bad =
        recvault::store::s3::S3Store::connect_with_key(&cfg, &s3.access_key, "not-the-secret")
            .await
            .unwrap();
    let err = recvault::store::ObjectStore::head(&bad, &format!("{prefix}x"))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "a signature error is permanent: {err}");
    assert!(
        err.to_string().contains("SignatureDoesNotMatch") || err.to_string().contains("403"),
        "{err}"
    );
}

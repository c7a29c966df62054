//! Sync tools compare sizes and times: the first copy must be right and the
//! second must transfer nothing (rclone's sftp backend, as scripts use it).

use std::process::Command;

use crate::harness::*;

pub(crate) fn rclone(server: &Server, key: &ClientKey, args: &[&str]) -> std::process::Output {
    Command::new("rclone")
        .args(args)
        .args([
            "-v",
            "--config",
            "/dev/null",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ])
        .env("RCLONE_CONFIG_RV_TYPE", "sftp")
        .env("RCLONE_CONFIG_RV_HOST", "127.0.0.1")
        .env("RCLONE_CONFIG_RV_PORT", server.port.to_string())
        .env("RCLONE_CONFIG_RV_USER", "qa")
        .env("RCLONE_CONFIG_RV_KEY_FILE", &key.private)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("rclone (install with scripts/test.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copy_is_right_first_time_and_transfers_nothing_the_second() {
    let data: Vec<Vec<u8>> = (0..3)
        .map(|i| pseudo_random(50_000 + i * 7_777, 90 + i as u64))
        .collect();
    let (server, key, work) = serve_sessions(
        "rclone",
        vec![
            (
                "r-1",
                "2026-11-23T08:00:00Z",
                "2026-11-23T08:10:00Z",
                data[0].clone(),
            ),
            (
                "r-2",
                "2026-11-23T09:00:00Z",
                "2026-11-23T09:20:00Z",
                data[1].clone(),
            ),
            (
                "r-3",
                "2026-11-23T10:00:00Z",
                "2026-11-23T10:30:00Z",
                data[2].clone(),
            ),
        ],
    )
    .await;
    let dest = work.path().join("export");
    let dest_s = dest.display().to_string();
    let first = rclone(&server, key, &["copy", "rv:/2026/11/23", &dest_s]);
    assert!(first.status.success(), "{}", text(&first));
    for (i, d) in data.iter().enumerate() {
        let id = format!("r-{}", i + 1);
        assert_eq!(
            sha256_file(&dest.join(format!("{id}/{id}.tar.gz"))),
            sha256(d),
            "{id}"
        );
    }
    let copied = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stderr)
            .matches(": Copied (")
            .count()
    };
    assert_eq!(
        copied(&first),
        6,
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = rclone(&server, key, &["copy", "rv:/2026/11/23", &dest_s]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(
        copied(&second),
        0,
        "the second pass must transfer nothing:\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let check = rclone(
        &server,
        key,
        &["check", "--size-only", "rv:/2026/11/23", &dest_s],
    );
    assert!(check.status.success(), "{}", text(&check));
}

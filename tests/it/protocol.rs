//! SFTP protocol details clients depend on: extensions, attributes, reads.

use bytes::Buf;

use crate::harness::*;
use crate::rawsftp::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_extension_stat_lstat_and_listing_agree() {
    let data = pseudo_random(300_000, 11);
    let (server, key, _work) = serve_sessions(
        "protocol",
        vec![(
            "c-1",
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:59:30Z",
            data.clone(),
        )],
    )
    .await;
    let mut h = connect(server.port).await;
    assert!(auth_key(&mut h, "qa", key).await);
    let (mut s, version) = RawSftp::start(&h).await;
    let advertised = String::from_utf8_lossy(&version.body).to_string();
    assert!(advertised.contains("limits@openssh.com"), "{advertised:?}");

    let r = s.path_request(FXP_EXTENDED, b"limits@openssh.com").await;
    assert_eq!(r.ty, FXP_EXTENDED_REPLY);
    let mut b = r.body.clone();
    let (max_packet, max_read) = (b.get_u64(), b.get_u64());
    assert!(
        max_read >= 64 * 1024 && max_packet > max_read,
        "{max_packet} {max_read}"
    );

    let path = b"/2026/11/23/c-1/c-1.tar.gz";
    let st = s.stat(path).await.unwrap();
    let lst = s.path_request(FXP_LSTAT, path).await;
    assert_eq!(lst.ty, FXP_ATTRS);
    assert_eq!(st.size, 300_000);
    assert_eq!(
        st.mtime as i64,
        t("2026-11-23T09:59:30Z").timestamp(),
        "mtime is the call's end"
    );
    assert_eq!(st.permissions, 0o100444);
    let dir = s.stat(b"/2026/11/23/c-1").await.unwrap();
    assert_eq!(dir.permissions, 0o040555);
    assert!(dir.mtime > 1_700_000_000);

    // Reads: large, at an odd offset, past the end, and after a backwards seek.
    let fh = s.open(path, 1).await.unwrap();
    let fst = s.request(FXP_FSTAT, |b| put_string(b, &fh)).await;
    assert_eq!(fst.ty, FXP_ATTRS);
    let fattrs = get_attrs(&mut fst.body.clone());
    assert_eq!(
        (fattrs.size, fattrs.mtime),
        (st.size, st.mtime),
        "fstat agrees with stat"
    );
    let first = s.read(&fh, 0, max_read as u32).await.unwrap();
    assert_eq!(&first[..], &data[..max_read as usize]);
    let mid = s.read(&fh, 123_457, 1000).await.unwrap();
    assert_eq!(&mid[..], &data[123_457..124_457]);
    let tail = s.read(&fh, 299_990, 1000).await.unwrap();
    assert_eq!(&tail[..], &data[299_990..]);
    assert_eq!(
        s.read(&fh, 300_000, 10).await.err().map(|e| e.0),
        Some(FX_EOF)
    );
    let again = s.read(&fh, 5, 10).await.unwrap();
    assert_eq!(&again[..], &data[5..15]);
    let huge = s.read(&fh, 0, u32::MAX).await.unwrap();
    assert!(
        huge.len() as u64 <= max_read,
        "reads are capped at the advertised size"
    );
}

//! The audit chain's heads, kept in the operator's bucket, away from the
//! disk the log is on. A chain shows an edited, deleted or reordered line,
//! but not a cut-off tail, nor a chain that someone able to write the file
//! recomputed from the start. The server therefore writes the head (seq,
//! and the SHA-256 of that line) to `audit/<node>/anchors/` every
//! `[audit] anchor_secs` and when it stops. `recvault audit verify --config`
//! then checks every anchor against the files: each anchored line must be
//! there with that very hash.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::audit::{Audit, Chain, Verdict};
use crate::store::{ObjectStore, PutOptions, StoreError};

/// One anchor object.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    pub node: String,
    /// The chain's [`crate::audit::chain_id`].
    pub chain: String,
    pub seq: u64,
    /// SHA-256 (hex) of the line with that seq.
    pub hash: String,
    pub ts: String,
}

/// Writes the current head of `audit`'s chain, unless it is `last` (the
/// head already anchored). Returns the head written or kept.
pub async fn write(
    store: &dyn ObjectStore,
    audit: &Audit,
    last: Option<u64>,
) -> Result<Option<u64>, String> {
    let node = audit.node();
    if !crate::path::is_name(node) {
        return Err(format!(
            "audit node name {node:?} cannot name a storage folder"
        ));
    }
    let Some((chain, seq, hash)) = audit
        .head()
        .map_err(|e| format!("cannot read the audit head: {e}"))?
    else {
        return Ok(last);
    };
    if last == Some(seq) {
        return Ok(last);
    }
    let now = chrono::Utc::now();
    let anchor = Anchor {
        node: node.to_string(),
        chain: chain.clone(),
        seq,
        hash,
        ts: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let key = crate::layout::audit_anchor(node, &chain, now.timestamp_millis(), seq, &anchor.hash);
    let body = serde_json::to_vec(&anchor).map_err(|e| e.to_string())?;
    store
        .put(&key, Bytes::from(body), PutOptions::default())
        .await
        .map_err(|e| format!("cannot store the audit anchor {key}: {e}"))?;
    Ok(Some(seq))
}

/// Anchors the chain every `every`, and copies the lines written since
/// the last copy to the bucket (`copies`, encrypted when `[audit] keyset`
/// is set), until the task is dropped.
pub async fn keep(
    store: crate::store::SharedStore,
    copies: crate::store::SharedStore,
    audit: std::sync::Arc<Audit>,
    every: Duration,
) {
    let mut last = None;
    loop {
        tokio::time::sleep(every).await;
        match write(store.as_ref(), &audit, last).await {
            Ok(l) => last = l,
            Err(e) => {
                warn!(error = %e, "audit anchor not written; next try in {} s", every.as_secs())
            }
        }
        if let Err(e) = copy_lines(copies.as_ref(), &audit).await {
            warn!(error = %e, "audit lines not copied to the bucket; next try in {} s", every.as_secs())
        }
    }
}

// Copies of the audit lines in the bucket,
// `audit/<node>/YYYY/MM/DD/<chain>-<first seq>-<last seq>.jsonl` (the
// day of the copy): each process copies the lines it wrote itself
// ([`Audit::keep_copies`]), so rotation, and other processes appending to
// the same file, need no file offsets.
/// Copies the lines written since the last copy; returns how many. On a
/// storage error the lines are kept for the next try.
pub async fn copy_lines(store: &dyn ObjectStore, audit: &Audit) -> Result<u64, String> {
    let node = audit.node().to_string();
    let mut batches = audit.take_copies();
    let mut copied = 0;
    while !batches.is_empty() {
        let b = &batches[0];
        let day = chrono::Utc::now().format("%Y/%m/%d").to_string();
        let key = crate::layout::audit_copy(&node, &day, &b.chain, b.first, b.last);
        if let Err(e) = store
            .put(&key, Bytes::from(b.lines.clone()), PutOptions::default())
            .await
        {
            audit.return_copies(batches);
            return Err(format!("cannot store {key}: {e}"));
        }
        copied += b.last - b.first + 1;
        batches.remove(0);
    }
    Ok(copied)
}

/// Where the audit lines' copies go: the bucket, through `[audit] keyset`
/// when it is set (an unreadable keyset is an error: copies are never
/// written in clear once encryption is asked for).
pub async fn copies_store(
    cfg: &crate::config::Config,
    store: &crate::store::SharedStore,
    audit: &Audit,
) -> Result<crate::store::SharedStore, String> {
    let Some(path) = &cfg.audit.keyset else {
        if cfg.audit.path.is_some() {
            warn!("[audit] keyset is not set: the copies of the audit lines in the bucket are not encrypted by recvault");
        }
        return Ok(store.clone());
    };
    let keys = crate::crypto::load_keyset(path, cfg.audit.keyset_kms_key.as_deref())
        .await
        .map_err(|e| format!("[audit] keyset: {e}"))?;
    let node = audit.node();
    let sealed = crate::store::crypt::Crypt::new(
        store.clone(),
        &format!("audit@{node}"),
        &crate::layout::audit_node(node),
        keys,
    )?;
    Ok(std::sync::Arc::new(sealed))
}

/// Every anchor of chain `chain` of `node`, oldest first, from the
/// listing alone: each key names its time, seq and hash.
pub async fn list(
    store: &dyn ObjectStore,
    node: &str,
    chain: &str,
) -> Result<Vec<(String, Anchor)>, StoreError> {
    let prefix = crate::layout::audit_anchors(node, chain);
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = store.list_page(&prefix, None, next).await?;
        for o in page.objects {
            let Some((ms, seq, hash)) = crate::layout::audit_anchor_of(&prefix, &o.key) else {
                return Err(StoreError::Permanent(format!(
                    "{} is not an audit anchor",
                    o.key
                )));
            };
            let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let anchor = Anchor {
                node: node.to_string(),
                chain: chain.to_string(),
                seq,
                hash: hash.to_string(),
                ts,
            };
            out.push((o.key, anchor));
        }
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok(out),
        }
    }
}

/// Checks a chain read from the files against the anchors in storage; the
/// verdict, and how many anchors were checked.
pub async fn check(store: &dyn ObjectStore, chain: &Chain) -> Result<(Verdict, usize), String> {
    if let Verdict::Broken { .. } = chain.verdict {
        return Ok((chain.verdict.clone(), 0));
    }
    let Some(id) = &chain.id else {
        return Ok((chain.verdict.clone(), 0));
    };
    let mut checked = 0;
    for node in &chain.nodes {
        let anchors = list(store, node, id).await.map_err(|e| e.to_string())?;
        for (key, a) in anchors {
            checked += 1;
            let broken = |why: String| Verdict::Broken {
                file: key.clone(),
                line: a.seq,
                why,
            };
            match chain.hashes.get((a.seq as usize).wrapping_sub(1)) {
                None => {
                    return Ok((
                        broken(format!(
                            "the anchor written at {} records seq {}, but the files end at seq {}: their tail was cut",
                            a.ts,
                            a.seq,
                            chain.hashes.len()
                        )),
                        checked,
                    ))
                }
                Some(h) if *h != a.hash => {
                    return Ok((
                        broken(format!(
                            "the line with seq {} is not the one anchored at {}: the chain was rewritten from there or before",
                            a.seq, a.ts
                        )),
                        checked,
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if checked == 0 {
        // A server anchors its chain every minute and when it stops.
        let node = chain.nodes.iter().next().map_or("?", |n| n.as_str());
        return Ok((
            Verdict::Broken {
                file: crate::layout::audit_anchors(node, id),
                line: 0,
                why: format!(
                    "no anchor of chain {id} in the bucket: the file was replaced by another chain, or no server ever anchored it"
                ),
            },
            0,
        ));
    }
    Ok((chain.verdict.clone(), checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn anchors_catch_a_cut_tail_and_a_recomputed_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("bucket")).unwrap();
        let log = dir.path().join("audit.log");
        let audit = Audit::file_of_node(&log, Some("node-a")).unwrap();
        for i in 0..4 {
            audit.job_finding("verify", "acme", &format!("/p/{i}"), "ok");
        }
        assert_eq!(write(&store, &audit, None).await.unwrap(), Some(4));
        assert_eq!(
            write(&store, &audit, Some(4)).await.unwrap(),
            Some(4),
            "unchanged head: no new anchor"
        );
        audit.job_finding("verify", "acme", "/p/4", "ok");
        let chain = crate::audit::read_chain(std::slice::from_ref(&log)).unwrap();
        let (v, n) = check(&store, &chain).await.unwrap();
        assert_eq!(
            (v, n),
            (
                Verdict::Intact {
                    lines: 5,
                    last_seq: 5
                },
                1
            )
        );

        // The last two lines cut off: the chain alone still holds.
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut = dir.path().join("cut.log");
        std::fs::write(&cut, lines[..3].join("\n") + "\n").unwrap();
        let chain = crate::audit::read_chain(std::slice::from_ref(&cut)).unwrap();
        assert!(matches!(chain.verdict, Verdict::Intact { .. }));
        let (v, _) = check(&store, &chain).await.unwrap();
        assert!(
            matches!(&v, Verdict::Broken { line: 4, why, .. } if why.contains("tail was cut")),
            "{v:?}"
        );

        // Line 2 edited and the chain recomputed after it: still a chain, not the anchored one.
        let mut prev = "0".repeat(64);
        let mut rewritten = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if i == 1 {
                v["path"] = "/p/other".into();
            }
            v["prev"] = prev.clone().into();
            let line = v.to_string();
            prev = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes()));
            rewritten.push(line);
        }
        let forged = dir.path().join("forged.log");
        std::fs::write(&forged, rewritten.join("\n") + "\n").unwrap();
        let chain = crate::audit::read_chain(std::slice::from_ref(&forged)).unwrap();
        assert!(
            matches!(chain.verdict, Verdict::Intact { .. }),
            "a recomputed chain passes alone"
        );
        let (v, _) = check(&store, &chain).await.unwrap();
        assert!(
            matches!(&v, Verdict::Broken { line: 4, why, .. } if why.contains("rewritten")),
            "{v:?}"
        );

        // The whole file replaced by a new chain: none of its anchors exist.
        let fresh = dir.path().join("fresh.log");
        let other = Audit::file_of_node(&fresh, Some("node-a")).unwrap();
        other.job_finding("verify", "acme", "/p/x", "ok");
        let chain = crate::audit::read_chain(std::slice::from_ref(&fresh)).unwrap();
        let (v, _) = check(&store, &chain).await.unwrap();
        assert!(
            matches!(&v, Verdict::Broken { why, .. } if why.contains("no anchor of chain")),
            "{v:?}"
        );
    }
}

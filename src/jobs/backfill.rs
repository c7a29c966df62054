//! `recvault backfill`: gives sessions archived before derived media
//! existed their derived section, as ingest writes it today: the reserved
//! MP3 and MP4 entries (sizes from the call's start and end in the stored
//! index, with this version's fixed defaults: 128 kbps MP3, the default MP4
//! video cap), and each party's file remuxed from the RAW archive and
//! stored. The index is rewritten once, with everything it had. A session
//! that has its derived entries is left alone, so a second run changes
//! nothing; each session changed is a finding (audited). A storage fault
//! stops the job; it resumes at that session.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Job, Session};
use crate::layout::index::{self, Derived, SessionIndex};
use crate::store::{PutOptions, StoreError};

pub struct Backfill;

#[async_trait]
impl Job for Backfill {
    fn kind(&self) -> &'static str {
        "backfill"
    }

    /// The day's index must list the new entries and the indexes' new sizes.
    fn rewrites_indexes(&self) -> bool {
        true
    }

    async fn session(&self, s: &Session) -> Result<Vec<String>, String> {
        let store = s.store.as_ref();
        let bytes = match crate::store::read_all(store, &s.keys.index(), index::MAX_BYTES).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Ok(vec![
                    "info.json disappeared during the backfill (erased?)".into()
                ])
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut index = match SessionIndex::parse(&bytes) {
            Ok(i) => i,
            Err(e) => return Ok(vec![format!("info.json: {e}; not backfilled")]),
        };
        let unreadable = SessionIndex::unreadable(&bytes);
        if !unreadable.is_empty() {
            // Rewriting the index would drop what this version cannot read.
            return Ok(vec![format!(
                "info.json has parts this version cannot read ({}); not backfilled",
                unreadable.join(", ")
            )]);
        }
        let id = s.keys.id().to_string();
        let derived = &index.recvault.derived;
        let rendered = [format!("{id}.mp3"), format!("{id}.mp4")];
        let needs_rendered = rendered.iter().any(|n| !derived.contains_key(n));
        let needs_party = !derived
            .keys()
            .any(|n| crate::media::render::webm::is_party_file(n));
        if !needs_rendered && !needs_party {
            return Ok(Vec::new());
        }
        let (Some(started), Some(ended)) = (index.started(), index.ended()) else {
            return Ok(vec![
                "info.json has no call start or end: no sizes to reserve; not backfilled".into(),
            ]);
        };
        let mut added = Vec::new();
        if needs_rendered {
            let recipe = crate::media::producer::Mp4Recipe {
                video_bps: crate::media::render::VIDEO_BPS,
                encoder: crate::media::render::ffmpeg::encoder_build()
                    .await
                    .to_string(),
                // A fixed default too: one encoder.
                threads: 1,
            };
            for (name, d) in crate::media::producer::reserve(&id, started, ended, &recipe) {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    index.recvault.derived.entry(name)
                {
                    added.push(format!("{} ({} bytes reserved)", slot.key(), d.size));
                    slot.insert(d);
                }
            }
        }
        if needs_party {
            let mut streams: HashMap<String, std::fs::File> = crate::media::raw::parse_entries(
                store,
                &s.keys.archive(),
                |n| n.ends_with(".mjr"),
                |_, file| Ok(file),
            )
            .await
            .map_err(|e| format!("{}: {e}", s.keys.archive_name()))?
            .into_iter()
            .collect();
            let files = crate::media::render::webm::store_party_files(store, &s.keys, |n| {
                streams.remove(n)
            })
            .await;
            for (name, d) in files {
                added.push(format!("{name} ({} bytes)", d.size));
                index.recvault.derived.insert(name, Derived::stored(&d));
            }
        }
        if added.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = index.to_bytes();
        store
            .put(
                &s.keys.index(),
                bytes::Bytes::from(bytes),
                PutOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(vec![format!("derived entries added: {}", added.join(", "))])
    }
}

/// `recvault backfill`: backfills every configured tenant (or the one
/// named), prints each session changed (or skipped, with why) and a summary
/// line per tenant on stdout. Returns the number of sessions reported.
pub async fn run_cli(
    cfg: &crate::config::Config,
    tenant: Option<&str>,
    since: Option<chrono::NaiveDate>,
) -> Result<usize, String> {
    super::run_cli(cfg, tenant, since, &Backfill, |id, report, resumed| {
        for f in &report.findings {
            println!("{id} {}: {}", f.path, f.what);
        }
        println!(
            "backfill {id}: {} sessions seen, {} reported{resumed}",
            report.sessions,
            report.findings.len()
        );
    })
    .await
}

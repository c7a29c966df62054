//! The session index (`info.json`): the gateway's fields as it sent them,
//! plus the `recvault` block ingest adds (SPEC §3). One reader
//! ([`SessionIndex::parse`]) and one writer ([`SessionIndex::to_bytes`]).
//!
//! The block is versioned (`"v": 1`; indexes written before the field was
//! renamed carry `"version": 1`, read the same). Later versions add fields;
//! fields this version does not know are kept as they are when an index is
//! read and written again, so no stored session breaks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of the `recvault` block this code writes.
pub const VERSION: u32 = 1;

/// Largest index read (it is an index, not media).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// A whole `info.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionIndex {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "or_default"
    )]
    pub session_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "or_default"
    )]
    pub started_at: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "or_default"
    )]
    pub ended_at: Option<String>,
    /// The gateway's other fields (parties, queue, tags, …), as sent.
    #[serde(flatten)]
    pub gateway: Map<String, Value>,
    /// What recvault learned at ingest.
    #[serde(default, deserialize_with = "or_default")]
    pub recvault: Recvault,
}

/// The `recvault` block. Every field is read on its own: one this version
/// cannot read is left at its default (and named by
/// [`SessionIndex::unreadable`]) instead of making the whole index unreadable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recvault {
    /// The block's version (`"v"`); `None` only while reading.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "or_default"
    )]
    pub v: Option<u32>,
    /// The name indexes written before `v` used; read into `v`.
    #[serde(default, skip_serializing, deserialize_with = "or_default")]
    version: Option<u32>,
    /// When ingest accepted the session (RFC 3339).
    #[serde(default, deserialize_with = "or_default")]
    pub ingested_at: Option<String>,
    /// Stored objects of the session folder by name (the RAW archive).
    #[serde(default, deserialize_with = "each_that_reads")]
    pub objects: BTreeMap<String, Digest>,
    /// The files the gateway sent, by name.
    #[serde(default, deserialize_with = "each_that_reads")]
    pub raw_files: BTreeMap<String, Digest>,
    /// What ingest learned of each MJR stream, by file name.
    #[serde(default, deserialize_with = "each_that_reads")]
    pub streams: BTreeMap<String, StreamSummary>,
    /// Derived entries by name, with their reserved sizes.
    #[serde(default, deserialize_with = "each_that_reads")]
    pub derived: BTreeMap<String, Derived>,
    /// Fields of later versions, kept as they are.
    #[serde(flatten)]
    pub later: Map<String, Value>,
}

/// A field read on its own: its default when it has another shape.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let raw = Value::deserialize(d)?;
    Ok(serde_json::from_value(raw).unwrap_or_default())
}

/// A map whose entries are read one by one: an entry this version cannot
/// read is left out (and the session keeps every other entry) rather than
/// making the whole index unreadable.
fn each_that_reads<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let Value::Object(raw) = Value::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect())
}

impl Default for Recvault {
    fn default() -> Self {
        Self {
            v: Some(VERSION),
            version: None,
            ingested_at: None,
            objects: BTreeMap::new(),
            raw_files: BTreeMap::new(),
            streams: BTreeMap::new(),
            derived: BTreeMap::new(),
            later: Map::new(),
        }
    }
}

/// Size and SHA-256 (hex) of a stored object or a received file; MD5 and
/// SHA-1 too for objects stored since they were recorded (rclone and other
/// sync tools compare those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// For a stored object recvault encrypted: its mark, naming the key
    /// that sealed it (`tink-aes-gcm-hkdf-streaming key=<id>`, SPEC §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// A hex digest of `len` digits, in lower case, when `h` is one.
fn hex_of(h: Option<&str>, len: usize) -> Option<String> {
    h.filter(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

impl Digest {
    /// A size and SHA-256 alone.
    pub fn new(size: u64, sha256: String) -> Self {
        Digest {
            size,
            sha256,
            md5: None,
            sha1: None,
            sealed: None,
        }
    }

    /// The hash, when it is a well-formed SHA-256, in lower case.
    pub fn sha256_hex(&self) -> Option<String> {
        hex_of(Some(&self.sha256), 64)
    }

    /// The hashes recorded (each only when well-formed).
    pub fn hashes(&self) -> Hashes {
        Hashes {
            md5: self.md5.clone(),
            sha1: self.sha1.clone(),
            sha256: Some(self.sha256.clone()),
        }
        .checked()
    }
}

/// What is known of a file's MD5, SHA-1 and SHA-256 (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Hashes {
    /// Only the well-formed ones, in lower case.
    pub fn checked(self) -> Hashes {
        Hashes {
            md5: hex_of(self.md5.as_deref(), 32),
            sha1: hex_of(self.sha1.as_deref(), 40),
            sha256: hex_of(self.sha256.as_deref(), 64),
        }
    }
}

/// MD5, SHA-1 and SHA-256 of bytes as they pass, and their count.
#[derive(Default)]
pub struct Summer {
    md5: md5::Md5,
    sha1: sha1::Sha1,
    sha256: sha2::Sha256,
    size: u64,
}

impl Summer {
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        self.md5.update(data);
        self.sha1.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
    }

    /// The digest of everything passed so far.
    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest {
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
            md5: Some(hex::encode(self.md5.finalize())),
            sha1: Some(hex::encode(self.sha1.finalize())),
            sealed: None,
        }
    }
}

/// One derived entry: its reserved size and what its render needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derived {
    /// Bytes a read returns (a reservation for rendered entries).
    pub size: u64,
    /// MP3: audio samples at 48 kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// MP4: the call's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// MP4: the video cap the reservation was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_bps: Option<u64>,
    /// MP4: the encoder build of the node that archived the session
    /// (`ffmpeg …; x264 core …`): a node with another build logs it, since
    /// its bytes may differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// MP4: the x264 encoders run in parallel at archive time's setting
    /// (`[limits] render_threads`); absent: one. Every render of the
    /// session uses it, since the bytes depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Made at archive time and stored in `derived/` (WebM): never rendered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stored: bool,
    /// Hashes of a stored entry (rendered ones keep theirs beside the file).
    #[serde(flatten)]
    pub hashes: Hashes,
}

impl Derived {
    /// The entry of a file made at archive time and stored (a party file).
    pub fn stored(d: &Digest) -> Derived {
        Derived {
            size: d.size,
            stored: true,
            hashes: d.hashes(),
            ..Derived::default()
        }
    }
}

/// What a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Video,
    Data,
}

/// What ingest learns from one MJR stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub kind: Kind,
    pub codec: String,
    /// `MJR00001` or `MJR00002`.
    pub format: String,
    /// Wall-clock time the recording was created / its first frame arrived (µs since the epoch).
    pub created_us: Option<i64>,
    pub first_frame_us: Option<i64>,
    pub packets: u64,
    /// RTP packets that carried no media (padding only).
    pub padding_only: u64,
    /// Sequence numbers missing between the first and last packet.
    pub lost: u64,
    /// Packets whose sequence number went backwards (reordered or duplicate).
    pub reordered: u64,
    pub ssrc_changes: u64,
    /// Unwrapped RTP timestamps of the first and last packet.
    pub first_rtp: Option<u64>,
    pub last_rtp: Option<u64>,
    /// RTP clock rate of the codec (Hz).
    pub clock_rate: u32,
    /// Media duration from the RTP timestamps, in ms.
    pub duration_ms: u64,
    /// Received-time span of the frames (MJR00002 only), in ms.
    pub received_span_ms: u64,
}

fn time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl SessionIndex {
    /// Reads an index. Malformed JSON is an error; missing fields are not
    /// (indexes written by earlier versions lack some).
    pub fn parse(bytes: &[u8]) -> Result<SessionIndex, String> {
        let mut i: SessionIndex = serde_json::from_slice(bytes)
            .map_err(|e| format!("the session index is malformed: {e}"))?;
        let r = &mut i.recvault;
        let old = r.version.take();
        r.v = r.v.or(old).or(Some(VERSION));
        Ok(i)
    }

    /// What [`Self::parse`] had to leave out of `bytes`: the fields and map
    /// entries of a shape this version cannot read (`recvault.derived.<name>`,
    /// `ended_at`, …). Empty for every index this version writes.
    pub fn unreadable(bytes: &[u8]) -> Vec<String> {
        let (Ok(raw), Ok(read)) = (serde_json::from_slice::<Value>(bytes), Self::parse(bytes))
        else {
            return Vec::new();
        };
        let Ok(again) = serde_json::to_value(&read) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in ["session_id", "started_at", "ended_at"] {
            if raw.get(f).is_some_and(|v| Some(v) != again.get(f)) {
                out.push(f.to_string());
            }
        }
        match (raw.get("recvault"), again.get("recvault")) {
            (Some(Value::Object(r)), Some(a)) => {
                for (k, v) in r.iter().filter(|(k, _)| *k != "version") {
                    match (v, a.get(k)) {
                        (Value::Object(entries), Some(Value::Object(kept))) => out.extend(
                            entries
                                .keys()
                                .filter(|name| !kept.contains_key(*name))
                                .map(|name| format!("recvault.{k}.{name}")),
                        ),
                        (v, kept) if kept != Some(v) => out.push(format!("recvault.{k}")),
                        _ => {}
                    }
                }
            }
            (Some(_), _) => out.push("recvault".into()),
            (None, _) => {}
        }
        out
    }

    /// The gateway's `info.json` (already validated) as the start of an index.
    pub fn from_gateway(info: Value) -> Result<SessionIndex, String> {
        serde_json::from_value(info).map_err(|e| format!("info.json does not fit the index: {e}"))
    }

    /// The stored form (pretty-printed JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps with string keys always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn started(&self) -> Option<DateTime<Utc>> {
        time(self.started_at.as_deref())
    }

    pub fn ended(&self) -> Option<DateTime<Utc>> {
        time(self.ended_at.as_deref())
    }

    /// The derived entries a session folder shows (name, reserved size):
    /// its media files (`.mp3`, `.mp4`, `.webm`), not the bookkeeping
    /// beside them.
    pub fn shown_derived(&self) -> Vec<(String, u64)> {
        self.recvault
            .derived
            .iter()
            .filter(|(name, _)| [".mp3", ".mp4", ".webm"].iter().any(|x| name.ends_with(x)))
            .map(|(name, d)| (name.clone(), d.size))
            .collect()
    }

    /// The recorded size and hash of the stored object `name`.
    pub fn object(&self, name: &str) -> Option<&Digest> {
        self.recvault.objects.get(name)
    }

    /// Whether the index records exactly these received files (name → SHA-256).
    pub fn same_raw_files<'a>(
        &self,
        files: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        let recorded = &self.recvault.raw_files;
        !recorded.is_empty() && recorded.len() == files.len() && {
            let mut files = files;
            files.all(|(name, sha)| recorded.get(name).map(|r| r.sha256.as_str()) == Some(sha))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_written_before_v_was_renamed_reads_and_keeps_unknown_fields() {
        let old = br#"{"session_id":"c1","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:05:00Z",
            "agent":{"id":"a"},"queue":"sales",
            "recvault":{"version":1,"objects":{"c1.tar.gz":{"size":5,"sha256":"ab"}},
              "derived":{"c1.mp3":{"size":384,"samples":1152}},"future":{"x":1}}}"#;
        let i = SessionIndex::parse(old).unwrap();
        assert_eq!(i.recvault.v, Some(1));
        assert!(SessionIndex::unreadable(old).is_empty());
        assert_eq!(i.object("c1.tar.gz").unwrap().size, 5);
        assert_eq!(i.recvault.derived["c1.mp3"].samples, Some(1152));
        assert_eq!(i.gateway["queue"], "sales");
        assert_eq!(i.ended().unwrap().to_rfc3339(), "2026-11-23T10:05:00+00:00");
        let again: Value = serde_json::from_slice(&i.to_bytes()).unwrap();
        assert_eq!(again["recvault"]["v"], 1);
        assert_eq!(again["recvault"]["future"]["x"], 1, "later fields are kept");
        assert_eq!(again["agent"]["id"], "a");
        assert_eq!(SessionIndex::parse(&i.to_bytes()).unwrap(), i);
    }

    #[test]
    fn an_entry_this_version_cannot_read_leaves_the_others_alone() {
        let i = SessionIndex::parse(
            br#"{"recvault":{"v":1,"derived":{"c.mp3":{"size":"big"},"c.mp4":{"size":9}},
                "objects":{"c.tar.gz":{"size":3,"sha256":"aa"},"odd":7}}}"#,
        )
        .unwrap();
        assert_eq!(i.recvault.derived.len(), 1);
        assert_eq!(i.recvault.derived["c.mp4"].size, 9);
        assert_eq!(i.recvault.objects.len(), 1);
        assert_eq!(i.object("c.tar.gz").unwrap().size, 3);
        assert_eq!(
            SessionIndex::unreadable(
                br#"{"recvault":{"v":1,"derived":{"c.mp3":{"size":"big"},"c.mp4":{"size":9}},
                "objects":{"c.tar.gz":{"size":3,"sha256":"aa"},"odd":7}}}"#
            ),
            ["recvault.derived.c.mp3", "recvault.objects.odd"]
        );
    }

    #[test]
    fn fields_of_another_shape_are_left_at_their_default_and_named() {
        let odd =
            br#"{"session_id":"c1","ended_at":7,"recvault":{"v":"1","version":1,"ingested_at":5,
            "derived":null,"objects":{"c1.tar.gz":{"size":3,"sha256":"aa"}}}}"#;
        let i = SessionIndex::parse(odd).unwrap();
        assert_eq!(
            i.recvault.v,
            Some(1),
            "the old name is read when v is unreadable"
        );
        assert!(i.ended_at.is_none() && i.recvault.ingested_at.is_none());
        assert!(i.recvault.derived.is_empty());
        assert_eq!(i.object("c1.tar.gz").unwrap().size, 3, "the rest is kept");
        assert_eq!(
            SessionIndex::unreadable(odd),
            [
                "ended_at",
                "recvault.derived",
                "recvault.ingested_at",
                "recvault.v"
            ]
        );
        let fresh = SessionIndex::default().to_bytes();
        assert!(
            SessionIndex::unreadable(&fresh).is_empty(),
            "what this version writes reads back whole"
        );
        let v: Value = serde_json::from_slice(&fresh).unwrap();
        for field in ["ingested_at", "objects", "raw_files", "streams", "derived"] {
            assert!(
                v["recvault"].get(field).is_some(),
                "{field} is always written"
            );
        }
    }

    #[test]
    fn an_index_without_a_recvault_block_or_with_bad_json() {
        let i = SessionIndex::parse(br#"{"session_id":"c1"}"#).unwrap();
        assert_eq!(i.recvault, Recvault::default());
        assert!(i.started().is_none());
        assert!(SessionIndex::parse(b"{nope").is_err());
    }

    #[test]
    fn raw_files_compare_by_name_and_hash() {
        let mut i = SessionIndex::default();
        let d = |s: &str| Digest::new(1, s.into());
        assert!(
            !i.same_raw_files([("a", "1")].into_iter()),
            "nothing recorded"
        );
        i.recvault.raw_files.insert("a".into(), d("1"));
        i.recvault.raw_files.insert("b".into(), d("2"));
        assert!(i.same_raw_files([("a", "1"), ("b", "2")].into_iter()));
        assert!(!i.same_raw_files([("a", "1"), ("b", "3")].into_iter()));
        assert!(!i.same_raw_files([("a", "1")].into_iter()));
    }
}

//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`) and of the test
//! that replays their corpora and crash reproducers on stable
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`): one function per
//! parser of outside input, taking arbitrary bytes. Each must return, never
//! panic, and keep the parser's own promises (checked with `assert!` here,
//! so a broken promise is a crash the fuzzer reports). Not an API.

use bytes::Bytes;

use crate::media::depacketize::{audio, h264, vp8, vp9, Packet};
use crate::path::VPath;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target, by name (the folder names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("path", path),
    ("config", config),
    ("mjr", mjr),
    ("depacketize", depacketize),
    ("ftp_line", ftp_line),
    ("sftp_packet", sftp_packet),
    ("ingest_route", ingest_route),
    ("api_request", api_request),
    ("info_json", info_json),
    ("tar", tar),
    ("proxy_header", proxy_header),
];

/// Client paths: what resolves is canonical and made of valid names.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::path::is_name(raw);
    let cwd = VPath::parse_absolute("/2026/11").unwrap_or_else(|_| VPath::root());
    for resolved in [VPath::resolve(&cwd, raw), VPath::parse_absolute(raw)]
        .into_iter()
        .flatten()
    {
        for c in resolved.components() {
            assert!(crate::path::is_name(c), "component {c:?} of {raw:?}");
            assert!(c != "." && c != "..", "component {c:?} of {raw:?}");
        }
    }
}

/// The configuration loader (TOML, then every check).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse(text, "fuzz.toml");
    }
}

/// An MJR file: the ingest scan, the ordered packet reader, and every
/// depacketizer and audio decoder over what it reads.
pub fn mjr(data: &[u8]) {
    let _ = crate::media::mjr::scan(data);
    if let Ok(stream) = crate::media::order::read_stream(data) {
        for w in stream.packets.windows(2) {
            assert!(w[0].seq < w[1].seq, "packets in sequence order");
        }
        all_depacketizers(&stream.packets);
    }
}

/// RTP packets as a depacketizer sees them, from a compact encoding: each
/// packet is a 2-byte sequence step, a 2-byte timestamp step, a marker
/// byte, a 1-byte payload length and the payload.
pub fn depacketize(data: &[u8]) {
    let mut packets = Vec::new();
    let (mut seq, mut ts) = (0u64, 0u64);
    let mut rest = data;
    while rest.len() >= 6 {
        seq += u64::from(u16::from_be_bytes([rest[0], rest[1]])) % 8;
        ts += u64::from(u16::from_be_bytes([rest[2], rest[3]]));
        let marker = rest[4] & 1 == 1;
        let len = usize::from(rest[5]).min(rest.len() - 6);
        packets.push(Packet {
            seq,
            ts,
            marker,
            payload: rest[6..6 + len].to_vec(),
        });
        rest = &rest[6 + len..];
    }
    all_depacketizers(&packets);
}

fn all_depacketizers(packets: &[Packet]) {
    // Video frames keep the sender's times (the IVF writer makes them move
    // forward); Opus frames are a timeline and must.
    let _ = vp8::depacketize(packets);
    let _ = vp9::depacketize(packets);
    let _ = h264::depacketize(packets);
    let (frames, _) = audio::opus(packets);
    for w in frames.windows(2) {
        assert!(w[0].ts <= w[1].ts, "Opus frames in time order");
    }
    let _ = audio::g711(packets, false);
    let _ = audio::g711(packets, true);
    let _ = audio::g722(packets);
}

/// FTP command lines: the capped line reader, the verb split, list options
/// and the path of the argument.
pub fn ftp_line(data: &[u8]) {
    use crate::ftps::fuzzing::{line_reader, split, strip_list_options};
    futures::executor::block_on(async {
        let mut input = data;
        let mut reader = line_reader(512);
        while let Ok(line) = reader.next(&mut input).await {
            // At most the cap in bytes read (a byte that is not UTF-8
            // becomes one replacement character).
            assert!(line.chars().count() <= 512, "a line over the cap");
            // LF ends a line; a CR inside one is data (replies flatten it).
            assert!(!line.contains('\n'), "a line feed in a line");
            assert!(!line.ends_with('\r'), "a line keeps its CR");
            let (verb, arg) = split(&line);
            assert!(verb.len() <= line.len());
            let _ = VPath::resolve(&VPath::root(), strip_list_options(arg));
        }
    });
}

/// One SFTP packet body (after its length), as the request loop decodes it.
pub fn sftp_packet(data: &[u8]) {
    let mut bytes = Bytes::copy_from_slice(data);
    let _ = russh_sftp::protocol::Packet::try_from(&mut bytes);
}

/// An ingest request line: the first byte picks the method, the rest is the
/// path.
/// A content API request: method (first byte), path, query string and
/// `Range` header (lines). A routed call or file names a path of plain
/// names inside the tenant's tree; a served range lies inside the file.
pub fn api_request(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (path, query, range) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let method = [
        hyper::Method::GET,
        hyper::Method::HEAD,
        hyper::Method::POST,
        hyper::Method::DELETE,
    ][usize::from(m % 4)]
    .clone();
    use crate::api::route::{CallId, Route};
    let named = match Route::of(&method, path) {
        Ok(Route::Media { id, name, .. }) | Ok(Route::MakeLink { id, name }) => {
            CallId::parse(id).and_then(|c| c.entry(name))
        }
        Ok(Route::Call(id)) | Ok(Route::Erase(id)) => CallId::parse(id).map(|c| c.folder()),
        _ => None,
    };
    if let Some(p) = named {
        let parts = p.components();
        assert!((4..=5).contains(&parts.len()), "{path:?} -> {p}");
        assert!(
            parts
                .iter()
                .all(|c| crate::path::is_name(c) && !c.starts_with('.')),
            "{path:?} -> {p}"
        );
    }
    crate::api::fuzzing::query(query);
    let _ = crate::layout::EventRef::is_position(query);
    crate::api::fuzzing::range(range, u64::from(m) * 1000);
    crate::api::fuzzing::range(range, u64::MAX);
}

pub fn ingest_route(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = [
        hyper::Method::GET,
        hyper::Method::PUT,
        hyper::Method::POST,
        hyper::Method::DELETE,
    ][usize::from(m % 4)]
    .clone();
    crate::ingest::fuzzing::route(&method, path);
}

/// A gateway's `info.json`.
pub fn info_json(data: &[u8]) {
    let _ = crate::ingest::validate::parse_info("call-1", data);
}

/// A one-shot upload's tar, unpacked into a scratch folder.
pub fn tar(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!(
        "recvault-fuzz-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    if std::fs::create_dir(&dir).is_err() {
        return;
    }
    let body = dir.join("upload.tar");
    if std::fs::write(&body, data).is_ok() {
        crate::ingest::fuzzing::unpack(&body, &dir, 1 << 20);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PROXY protocol header from a balancer: parsed or refused, its length
/// never past the input, a claimed address only for the PROXY command.
pub fn proxy_header(data: &[u8]) {
    if let Ok((claimed, len)) = crate::proxy::parse(data) {
        assert!((16..=data.len()).contains(&len));
        assert_eq!(claimed.is_some(), data[12] & 0x0f == 1);
    }
}

#[cfg(test)]
mod tests {
    /// Every corpus file and crash reproducer, through the same entry
    /// points, so CI keeps what the fuzzers found fixed.
    #[test]
    fn fuzz_corpora_and_crash_reproducers_replay_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in super::TARGETS {
            let mut files = 0;
            for kind in ["corpus", "artifacts"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for entry in dir.flatten() {
                    if let Ok(data) = std::fs::read(entry.path()) {
                        target(&data);
                        files += 1;
                    }
                }
            }
            assert!(files > 0, "fuzz/corpus/{name} holds no seed");
            replayed += files;
        }
        eprintln!("replayed {replayed} corpus files");
    }
}

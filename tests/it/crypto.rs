//! Encryption at rest against Google's Tink itself (PyPI `tink`, in the
//! test virtualenv): what recvault encrypts, Tink decrypts, and the other
//! way round, under keysets either side made, at sizes around the segment
//! boundaries. Tink is the customer's way to read their archive without
//! recvault; this is the proof that it works.

use std::path::{Path, PathBuf};
use std::process::Command;

use recvault::crypto::keyset::Keyset;
use recvault::crypto::streaming::{self, Layout};

/// Tink's side: `gen KEYSET`, then `enc|dec KEYSET AAD (IN OUT)...`; exits
/// 3 with the error when a decryption fails.
const TINK: &str = r#"
import io, sys
import tink
from tink import streaming_aead, secret_key_access
streaming_aead.register()
mode, keyset = sys.argv[1], sys.argv[2]
if mode == "gen":
    h = tink.new_keyset_handle(streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
    open(keyset, "w").write(tink.json_proto_keyset_format.serialize(h, secret_key_access.TOKEN))
    sys.exit(0)
h = tink.json_proto_keyset_format.parse(open(keyset).read(), secret_key_access.TOKEN)
p = h.primitive(streaming_aead.StreamingAead)
aad = sys.argv[3].encode()
files = sys.argv[4:]
class Keep(io.BytesIO):
    def close(self):
        pass
for src, dst in zip(files[::2], files[1::2]):
    data = open(src, "rb").read()
    if mode == "enc":
        out = Keep()
        with p.new_encrypting_stream(out, aad) as e:
            e.write(data)
        open(dst, "wb").write(out.getvalue())
    else:
        try:
            with p.new_decrypting_stream(io.BytesIO(data), aad) as d:
                plain = d.read()
        except tink.TinkError as e:
            print(f"{src}: {e}", file=sys.stderr)
            sys.exit(3)
        open(dst, "wb").write(plain)
"#;

/// Tink's `enc` or `dec` of each (input, output) pair under `keyset`, with
/// associated data `aad`.
pub(crate) fn tink_files(
    mode: &str,
    keyset: &Path,
    aad: &str,
    pairs: &[(PathBuf, PathBuf)],
) -> std::process::Output {
    let mut args = vec![mode, s(keyset), aad];
    for (from, to) in pairs {
        args.push(s(from));
        args.push(s(to));
    }
    tink(&args)
}

pub(crate) fn tink(args: &[&str]) -> std::process::Output {
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    Command::new(python)
        .arg("-c")
        .arg(TINK)
        .args(args)
        .output()
        .expect("run python with tink (scripts/test.sh installs it)")
}

const MIB: usize = 1 << 20;
const LAYOUT: Layout = Layout { segment: MIB };
/// Empty, one byte, one short of a full first segment, exactly one, one
/// more, and four segments.
const SIZES: [usize; 6] = [0, 1, MIB - 56 - 1, MIB - 56, MIB - 56 + 1, 3 * MIB + 12_345];

fn plaintext(n: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes each size's plaintext; returns their paths.
fn plaintexts(dir: &Path) -> Vec<(usize, PathBuf)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = dir.join(format!("plain-{n}"));
            std::fs::write(&p, plaintext(n, i as u8)).unwrap();
            (n, p)
        })
        .collect()
}

const AAD: &str = "recvault test tenant=acme path=sessions/2026/11/23/call-1/call-1.tar.gz";

#[test]
fn tink_decrypts_what_recvault_encrypts_and_recvault_what_tink_encrypts() {
    let dir = tempfile::tempdir().unwrap();
    let keyset_path = dir.path().join("tink-keyset.json");
    let out = tink(&["gen", s(&keyset_path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keyset = Keyset::from_json(&std::fs::read_to_string(&keyset_path).unwrap())
        .expect("recvault reads Tink's keyset");
    let key = keyset.primary().unwrap();
    assert_eq!(key.layout, LAYOUT, "AES256_GCM_HKDF_1MB: 1 MiB segments");
    let plains = plaintexts(dir.path());

    // Tink encrypts; recvault decrypts, whole and by ranges.
    let pairs: Vec<_> = plains
        .iter()
        .map(|(n, p)| (p.clone(), dir.path().join(format!("tink-{n}.ct"))))
        .collect();
    let out = tink_files("enc", &keyset_path, AAD, &pairs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (n, p) in &plains {
        let plain = std::fs::read(p).unwrap();
        let ct = std::fs::read(dir.path().join(format!("tink-{n}.ct"))).unwrap();
        assert_eq!(
            ct.len() as u64,
            LAYOUT.ciphertext_len(*n as u64),
            "size {n}"
        );
        assert_eq!(LAYOUT.plaintext_len(ct.len() as u64).unwrap(), *n as u64);
        let got = streaming::decrypt(key.material(), AAD.as_bytes(), LAYOUT, &ct)
            .unwrap_or_else(|e| panic!("size {n}: {e}"));
        assert!(
            got == plain,
            "size {n}: recvault's decryption of Tink's ciphertext differs"
        );
        // A range across the first boundary needs only its two segments.
        if *n > MIB {
            let (a, b) = LAYOUT.segments_for((MIB - 60) as u64, 10, ct.len() as u64);
            assert_eq!((a, b), (0, 1));
        }
        let wrong = streaming::decrypt(key.material(), b"another path", LAYOUT, &ct);
        assert!(
            wrong.is_err(),
            "size {n}: decrypted under the wrong associated data"
        );
    }

    // recvault encrypts; Tink decrypts.
    let mut pairs = Vec::new();
    for (n, p) in &plains {
        let plain = std::fs::read(p).unwrap();
        let ct = streaming::encrypt(key.material(), AAD.as_bytes(), LAYOUT, &plain).unwrap();
        let ct_path = dir.path().join(format!("rv-{n}.ct"));
        std::fs::write(&ct_path, ct).unwrap();
        pairs.push((ct_path, dir.path().join(format!("rv-{n}.out"))));
    }
    let out = tink_files("dec", &keyset_path, AAD, &pairs);
    assert!(
        out.status.success(),
        "Tink refused recvault's ciphertext: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (n, p) in &plains {
        let got = std::fs::read(dir.path().join(format!("rv-{n}.out"))).unwrap();
        assert!(
            got == std::fs::read(p).unwrap(),
            "size {n}: Tink's decryption of recvault's ciphertext differs"
        );
    }
}

#[test]
fn tink_reads_a_keyset_recvault_made_and_rotated_and_refuses_a_changed_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut keyset = Keyset::generate().unwrap();
    let old = keyset.primary;
    let plain = plaintext(2 * MIB, 9);
    let by_old = streaming::encrypt(
        keyset.primary().unwrap().material(),
        AAD.as_bytes(),
        LAYOUT,
        &plain,
    )
    .unwrap();
    let new = keyset.add_primary().unwrap();
    assert_ne!(old, new);
    let by_new = streaming::encrypt(
        keyset.primary().unwrap().material(),
        AAD.as_bytes(),
        LAYOUT,
        &plain,
    )
    .unwrap();
    let keyset_path = dir.path().join("recvault-keyset.json");
    std::fs::write(&keyset_path, keyset.to_json()).unwrap();
    let (old_ct, new_ct) = (dir.path().join("old.ct"), dir.path().join("new.ct"));
    std::fs::write(&old_ct, &by_old).unwrap();
    std::fs::write(&new_ct, &by_new).unwrap();
    let (old_out, new_out) = (dir.path().join("old.out"), dir.path().join("new.out"));
    let out = tink(&[
        "dec",
        s(&keyset_path),
        AAD,
        s(&old_ct),
        s(&old_out),
        s(&new_ct),
        s(&new_out),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&old_out).unwrap() == plain,
        "the rotated-out key still reads"
    );
    assert!(std::fs::read(&new_out).unwrap() == plain);

    // One flipped byte in the second segment: Tink refuses it too.
    let mut flipped = by_new.clone();
    flipped[MIB + 100] ^= 0x40;
    let bad = dir.path().join("flipped.ct");
    std::fs::write(&bad, &flipped).unwrap();
    let out = tink(&[
        "dec",
        s(&keyset_path),
        AAD,
        s(&bad),
        s(&dir.path().join("flipped.out")),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = keyset.key(new).unwrap();
    assert!(streaming::decrypt(key.material(), AAD.as_bytes(), LAYOUT, &flipped).is_err());
}

#[test]
fn keys_new_rotate_and_show_keep_the_keyset_secret_and_readable_by_tink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys/acme.json");
    let recvault = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_recvault"))
            .arg("keys")
            .args(args)
            .output()
            .unwrap()
    };
    let out = recvault(&["new", s(&file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("primary key") && shown.contains("back it up"),
        "{shown}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = Keyset::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let value = |set: &Keyset| {
        let v: serde_json::Value = serde_json::from_str(&set.to_json()).unwrap();
        v["key"][0]["keyData"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(!shown.contains(&value(&first)), "no key material on stdout");

    let again = recvault(&["new", s(&file)]);
    assert!(
        !again.status.success(),
        "an existing keyset is never overwritten"
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains(&value(&first)));

    let out = recvault(&["rotate", s(&file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = Keyset::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(rotated.keys.len(), 2);
    assert_ne!(rotated.primary, first.primary);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = recvault(&["show", s(&file)]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains(&format!(
            "key {}: enabled, 1024 KiB segments, primary",
            rotated.primary
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("key {}: enabled", first.primary)),
        "{shown}"
    );

    // Tink opens the file recvault wrote and decrypts what the old key encrypted.
    let plain = plaintext(5000, 3);
    let ct = streaming::encrypt(
        first.primary().unwrap().material(),
        AAD.as_bytes(),
        LAYOUT,
        &plain,
    )
    .unwrap();
    let (ct_path, out_path) = (dir.path().join("x.ct"), dir.path().join("x.out"));
    std::fs::write(&ct_path, ct).unwrap();
    let out = tink(&["dec", s(&file), AAD, s(&ct_path), s(&out_path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&out_path).unwrap() == plain);

    // A keyset others may read is refused, with the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = recvault(&["show", s(&file)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Encryption at rest: Tink's AES-GCM-HKDF streaming AEAD
//! ([`streaming`]) under per-tenant Tink JSON keysets ([`keyset`]), so a
//! customer can decrypt their objects with Google's Tink and no recvault.

pub mod keyset;
pub mod streaming;

use std::path::Path;

use keyset::Keyset;

/// Reads a keyset file (a secret file: refused when others may read it).
pub fn read_keyset(path: &Path) -> Result<Keyset, String> {
    let text = crate::secret::read_secret_file(path)?;
    Keyset::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What `recvault keys show` prints of a keyset: ids, which is primary,
/// segment sizes; never key material.
pub fn describe(path: &Path, set: &Keyset) -> String {
    let mut out = format!(
        "keyset {} (Tink JSON, AES-GCM-HKDF streaming, AES-256)\nprimary key: {}\n",
        path.display(),
        set.primary
    );
    for k in &set.keys {
        out.push_str(&format!(
            "key {}: {}, {} KiB segments{}\n",
            k.id,
            if k.enabled { "enabled" } else { "disabled" },
            k.layout.segment / 1024,
            if k.id == set.primary {
                ", primary (encrypts new objects)"
            } else {
                ", decrypts what it encrypted"
            }
        ));
    }
    out
}

/// `recvault keys new FILE`: a new keyset in a new secret file (never
/// overwriting one).
pub fn keys_new(path: &Path) -> Result<String, String> {
    let set = Keyset::generate()?;
    crate::secret::write_secret_file(path, set.to_json().as_bytes())?;
    Ok(format!(
        "{}back it up now: without it, what it encrypts can never be read again\n",
        describe(path, &set)
    ))
}

/// `recvault keys rotate FILE`: adds a new primary key; older keys stay to
/// read what they encrypted. The file is replaced atomically.
pub fn keys_rotate(path: &Path) -> Result<String, String> {
    let mut set = read_keyset(path)?;
    let id = set.add_primary()?;
    let tmp = path.with_extension("rotating");
    let _ = std::fs::remove_file(&tmp);
    crate::secret::write_secret_file(&tmp, set.to_json().as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(format!(
        "new primary key {id}\n{}back up the new file: objects written from now on need key {id}\n",
        describe(path, &set)
    ))
}

//! Encryption at rest: Tink's AES-GCM-HKDF streaming AEAD
//! ([`streaming`]) under per-tenant Tink JSON keysets ([`keyset`]), so a
//! customer can decrypt their objects with Google's Tink and no recvault.

pub mod keyset;
pub mod kms;
pub mod streaming;

use std::path::Path;

use keyset::Keyset;

/// Reads a cleartext keyset file (a secret file: refused when others may
/// read it).
pub fn read_keyset(path: &Path) -> Result<Keyset, String> {
    let text = crate::secret::read_secret_file(path)?;
    if kms::is_wrapped(&text) {
        return Err(format!(
            "{} is wrapped by a KMS key: name it with keyset_kms_key = \"aws-kms://…\"",
            path.display()
        ));
    }
    Keyset::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a keyset file: cleartext, or wrapped by the KMS key `kms` (a
/// Tink `aws-kms://` key URI).
pub async fn load_keyset(path: &Path, kms: Option<&str>) -> Result<Keyset, String> {
    let Some(uri) = kms else {
        return read_keyset(path);
    };
    let text = crate::secret::read_secret_file(path)?;
    if !kms::is_wrapped(&text) {
        return Err(format!(
            "{} is not a KMS-wrapped keyset (no encryptedKeyset), but keyset_kms_key is set",
            path.display()
        ));
    }
    kms::unwrap(&text, uri)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The file's text for `set`: Tink JSON, or wrapped by `kms`.
async fn keyset_text(set: &Keyset, kms: Option<&str>) -> Result<String, String> {
    match kms {
        Some(uri) => kms::wrap(set, uri).await,
        None => Ok(set.to_json()),
    }
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

/// `recvault keys new FILE [--kms URI]`: a new keyset in a new secret file
/// (never overwriting one), wrapped by the KMS key when one is named.
pub async fn keys_new(path: &Path, kms: Option<&str>) -> Result<String, String> {
    let set = Keyset::generate()?;
    let text = keyset_text(&set, kms).await?;
    crate::secret::write_secret_file(path, text.as_bytes())?;
    let wrapped = kms.map_or(String::new(), |u| format!("wrapped by {u}\n"));
    Ok(format!(
        "{}{wrapped}back it up now: without it, what it encrypts can never be read again\n",
        describe(path, &set)
    ))
}

/// `recvault keys rotate FILE [--kms URI]`: adds a new primary key; older
/// keys stay to read what they encrypted. The file is replaced atomically.
pub async fn keys_rotate(path: &Path, kms: Option<&str>) -> Result<String, String> {
    let mut set = load_keyset(path, kms).await?;
    let id = set.add_primary()?;
    let text = keyset_text(&set, kms).await?;
    let tmp = path.with_extension("rotating");
    let _ = std::fs::remove_file(&tmp);
    crate::secret::write_secret_file(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(format!(
        "new primary key {id}\n{}back up the new file: objects written from now on need key {id}\n",
        describe(path, &set)
    ))
}

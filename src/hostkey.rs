//! The SSH host key: loaded from disk, or generated (ed25519, mode 0600) on
//! first start when missing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding};
use russh::keys::PrivateKey;

pub fn load_or_generate(path: &Path) -> Result<PrivateKey, String> {
    if path.exists() {
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "host key {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
        return PrivateKey::read_openssh_file(path)
            .map_err(|e| format!("cannot read host key {}: {e}", path.display()));
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness for the host key: {e}"))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
    crate::secret::write_secret_file(path, pem.as_bytes()).map_err(|e| format!("host key: {e}"))?;
    if let Ok(public) = key.public_key().to_openssh() {
        let _ = std::fs::write(path.with_extension("pub"), format!("{public}\n"));
    }
    tracing::info!(path = %path.display(), fingerprint = %key.public_key().fingerprint(Default::default()), "generated a new SSH host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host");
        let a = super::load_or_generate(&path).unwrap();
        let b = super::load_or_generate(&path).unwrap();
        assert_eq!(a.public_key().key_data(), b.public_key().key_data());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

//! argon2id password hashes (PHC strings).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// Hashes a password with argon2id and the crate's default cost (m=19456, t=2, p=1).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// Checks that `phc` is an argon2id PHC string; the message never echoes it.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|_| "is not a PHC string: use `recvault hash-password`".to_string())?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "uses {}, not argon2id: use `recvault hash-password`",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// Verifies a password on the blocking pool, at most one verification per
/// CPU core at a time. Each argon2id verification takes 19 MiB for its
/// duration: unbounded, 100 clients logging in at once held 1.9 GB (seen in
/// `bench/load.sh`), and 64 unauthenticated connections guessing passwords
/// could do the same. More at once than there are cores would not finish
/// any sooner; the others wait their turn (within the login grace time).
pub async fn verify_bounded(phc: String, password: String) -> bool {
    static CHECKS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let checks = CHECKS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
    });
    let Ok(turn) = checks.clone().acquire_owned().await else {
        return false;
    };
    // The turn goes with the work: a login given up on (timed out) keeps it
    // until its verification really ends.
    tokio::task::spawn_blocking(move || {
        let ok = verify(&phc, &password);
        drop(turn);
        ok
    })
    .await
    .unwrap_or(false)
}

/// Verifies a password against a PHC string (CPU-heavy: call off the async
/// threads, through [`verify_bounded`]).
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a random password, verified against when the user is
/// unknown so that the answer takes as long as for a known user.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&format!("{:x}", rand::random::<u128>())).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        check_phc(&h).unwrap();
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "wrong"));
        assert!(!verify("garbage", "x"));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let e = check_phc("$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$ZXhhbXBsZWhhc2g").unwrap_err();
        assert!(e.contains("argon2i"), "{e}");
    }
}

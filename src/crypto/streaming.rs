//! Tink's AES-GCM-HKDF streaming AEAD, byte for byte as Google specifies it
//! (developers.google.com/tink/streaming-aead/aes_gcm_hkdf_streaming), so
//! that a customer can decrypt an object with Tink itself (Python, Java,
//! Go, C++) and no recvault.
//!
//! A ciphertext is a 40-byte header, then segments of `segment_size` bytes
//! (the last one shorter), each AES-256-GCM encrypted and authenticated on
//! its own:
//!
//! ```text
//! header   = 0x28 || salt (32) || nonce prefix (7)
//! key      = HKDF-SHA256(ikm = key material, salt, info = associated data), 32 bytes
//! nonce_i  = nonce prefix || i as u32 big-endian || 1 if segment i is the last, else 0
//! segment  = AES-256-GCM(key, nonce_i, plaintext_i, no associated data) (ciphertext || 16-byte tag)
//! ```
//!
//! Segment 0 holds the header too, so it carries `segment_size - 40 - 16`
//! plaintext bytes; every other full segment `segment_size - 16`. An empty
//! plaintext is the header and one empty last segment (its tag). The
//! associated data only enters the key derivation: an object decrypts only
//! with the same key and the same associated data.
//!
//! AES-256-GCM is ring's (linked already for SSH and TLS; about nine times
//! the speed of RustCrypto's `aes-gcm` on the build machine); HKDF-SHA256
//! is RustCrypto's `hkdf`.
//!
//! Because segments stand alone, a read of any range authenticates only
//! the segments it covers ([`Layout::segments_for`]), and the plaintext size
//! follows from the ciphertext size alone ([`Layout::plaintext_len`]).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

/// Bytes of the salt (the derived key's size: AES-256).
pub const SALT: usize = 32;
/// Bytes of the nonce prefix in the header.
pub const NONCE_PREFIX: usize = 7;
/// Bytes of the header: its own length byte, the salt and the nonce prefix.
pub const HEADER: usize = 1 + SALT + NONCE_PREFIX;
/// Bytes of each segment's GCM tag.
pub const TAG: usize = 16;

/// What a decryption can run into; none of them yields a byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not a recvault/Tink streaming ciphertext: {0}")]
    Format(String),
    #[error("segment {0} failed authentication (wrong key or associated data, or the object was changed)")]
    Authentication(u64),
    #[error("the ciphertext is truncated: {0}")]
    Truncated(String),
}

/// The sizes of one key's ciphertexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Ciphertext segment size (1 MiB for Tink's `AES256_GCM_HKDF_1MB`).
    pub segment: usize,
}

impl Layout {
    /// Plaintext bytes carried by segment `i`, when it is full.
    pub fn plain_in(&self, i: u64) -> u64 {
        let full = (self.segment - TAG) as u64;
        if i == 0 {
            full - HEADER as u64
        } else {
            full
        }
    }

    /// The ciphertext size of a plaintext of `n` bytes.
    pub fn ciphertext_len(&self, n: u64) -> u64 {
        let first = self.plain_in(0);
        let rest = self.plain_in(1);
        // Segments: the first holds up to `first` bytes; an empty or full
        // last segment is still one segment (Tink never adds an empty one
        // after a full one).
        let segments = if n <= first {
            1
        } else {
            1 + (n - first).div_ceil(rest)
        };
        HEADER as u64 + n + segments * TAG as u64
    }

    /// The plaintext size of a ciphertext of `n` bytes, or why `n` is no
    /// ciphertext's size.
    pub fn plaintext_len(&self, n: u64) -> Result<u64, CryptoError> {
        let seg = self.segment as u64;
        if n < (HEADER + TAG) as u64 {
            return Err(CryptoError::Truncated(format!(
                "{n} bytes is shorter than a header and one tag"
            )));
        }
        let segments = n.div_ceil(seg).max(1);
        let last_len = n - (segments - 1) * seg;
        // A last segment too short for its tag (or, after the first, empty)
        // cannot be: the object was cut at a segment boundary plus a little.
        let min_last = if segments == 1 { HEADER + TAG } else { TAG + 1 };
        if (last_len as usize) < min_last {
            return Err(CryptoError::Truncated(format!(
                "its last segment has {last_len} bytes"
            )));
        }
        Ok(n - HEADER as u64 - segments * TAG as u64)
    }

    /// Number of segments of a ciphertext of `n` bytes (at least one).
    pub fn segment_count(&self, n: u64) -> u64 {
        n.div_ceil(self.segment as u64).max(1)
    }

    /// The plaintext offset where segment `i` starts.
    pub fn plain_start(&self, i: u64) -> u64 {
        if i == 0 {
            0
        } else {
            self.plain_in(0) + (i - 1) * self.plain_in(1)
        }
    }

    /// The first segment start at or after plaintext offset `at`.
    pub fn boundary_at_or_after(&self, at: u64) -> u64 {
        let i = self.segment_of(at);
        let start = self.plain_start(i);
        if start == at {
            at
        } else {
            self.plain_start(i + 1)
        }
    }

    /// The segment holding plaintext offset `offset` (the last one for an
    /// offset at or past the end).
    pub fn segment_of(&self, offset: u64) -> u64 {
        let first = self.plain_in(0);
        if offset < first {
            0
        } else {
            1 + (offset - first) / self.plain_in(1)
        }
    }

    /// The ciphertext byte range `[start, end)` of segment `i` in a
    /// ciphertext of `n` bytes (segment 0 includes the header).
    pub fn cipher_range(&self, i: u64, n: u64) -> (u64, u64) {
        let seg = self.segment as u64;
        ((i * seg).min(n), ((i + 1) * seg).min(n))
    }

    /// The segments `[first, last]` a read of `len` plaintext bytes from
    /// `offset` needs, in a ciphertext of `n` bytes.
    pub fn segments_for(&self, offset: u64, len: u64, n: u64) -> (u64, u64) {
        let count = self.segment_count(n);
        let first = self.segment_of(offset).min(count - 1);
        let last = self
            .segment_of(offset.saturating_add(len.max(1)) - 1)
            .min(count - 1);
        (first, last.max(first))
    }
}

/// The per-object key and nonce prefix, derived from the key material, the
/// header's salt and the associated data.
pub struct SegmentCipher {
    cipher: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX],
}

fn nonce(prefix: &[u8; NONCE_PREFIX], i: u64, last: bool) -> Result<[u8; 12], CryptoError> {
    let i = u32::try_from(i).map_err(|_| CryptoError::Format("more than 2^32 segments".into()))?;
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX].copy_from_slice(prefix);
    n[NONCE_PREFIX..11].copy_from_slice(&i.to_be_bytes());
    n[11] = last as u8;
    Ok(n)
}

impl SegmentCipher {
    fn derive(
        ikm: &[u8],
        salt: &[u8],
        aad: &[u8],
        nonce_prefix: [u8; NONCE_PREFIX],
    ) -> Result<Self, CryptoError> {
        let hk = hkdf::Hkdf::<sha2_11::Sha256>::new(Some(salt), ikm);
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(aad, key.as_mut())
            .map_err(|_| CryptoError::Format("HKDF cannot derive a 32-byte key".into()))?;
        let cipher = UnboundKey::new(&AES_256_GCM, key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Format("bad AES-256 key length".into()))?;
        Ok(Self {
            cipher,
            nonce_prefix,
        })
    }

    /// The cipher of a ciphertext whose header is `header`.
    pub fn for_header(ikm: &[u8], aad: &[u8], header: &[u8]) -> Result<Self, CryptoError> {
        if header.len() < HEADER {
            return Err(CryptoError::Truncated(format!(
                "a header of {} bytes instead of {HEADER}",
                header.len()
            )));
        }
        if header[0] as usize != HEADER {
            return Err(CryptoError::Format(format!(
                "header length byte {} instead of {HEADER}",
                header[0]
            )));
        }
        let mut prefix = [0u8; NONCE_PREFIX];
        prefix.copy_from_slice(&header[1 + SALT..HEADER]);
        Self::derive(ikm, &header[1..1 + SALT], aad, prefix)
    }

    /// Decrypts segment `i` (its ciphertext and tag; segment 0 without the
    /// header) and checks its tag.
    pub fn open(&self, i: u64, last: bool, segment: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if segment.len() < TAG {
            return Err(CryptoError::Truncated(format!(
                "segment {i} has {} bytes, less than its tag",
                segment.len()
            )));
        }
        let n = Nonce::assume_unique_for_key(nonce(&self.nonce_prefix, i, last)?);
        let mut buf = segment.to_vec();
        let len = self
            .cipher
            .open_in_place(n, Aad::empty(), &mut buf)
            .map_err(|_| CryptoError::Authentication(i))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    fn seal(&self, i: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let n = Nonce::assume_unique_for_key(nonce(&self.nonce_prefix, i, last)?);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(n, Aad::empty(), &mut out[start..])
            .map_err(|_| CryptoError::Format("AES-GCM refused the segment".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Encrypts a stream: plaintext in, ciphertext out, one segment held at a
/// time (a segment is sealed once it is known whether more follows, as
/// Tink does: a plaintext that fills its last segment exactly ends there).
pub struct Encryptor {
    layout: Layout,
    cipher: SegmentCipher,
    /// Plaintext of the segment being filled.
    pending: Vec<u8>,
    index: u64,
}

impl Encryptor {
    /// A new ciphertext under key material `ikm` and associated data `aad`,
    /// with a fresh random salt and nonce prefix; `out` receives the header.
    pub fn new(
        ikm: &[u8],
        aad: &[u8],
        layout: Layout,
        out: &mut Vec<u8>,
    ) -> Result<Self, CryptoError> {
        let mut random = [0u8; SALT + NONCE_PREFIX];
        getrandom::getrandom(&mut random)
            .map_err(|e| CryptoError::Format(format!("no randomness: {e}")))?;
        let mut header = Vec::with_capacity(HEADER);
        header.push(HEADER as u8);
        header.extend_from_slice(&random);
        let cipher = SegmentCipher::for_header(ikm, aad, &header)?;
        out.extend_from_slice(&header);
        Ok(Self {
            layout,
            cipher,
            pending: Vec::new(),
            index: 0,
        })
    }

    /// Takes plaintext; appends every segment it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            let room = self.layout.plain_in(self.index) as usize;
            if self.pending.len() == room {
                // Full, and more follows: not the last segment.
                self.cipher.seal(self.index, false, &self.pending, out)?;
                self.pending.clear();
                self.index += 1;
                continue;
            }
            let take = (room - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last segment into `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.cipher.seal(self.index, true, &self.pending, out)
    }
}

/// Encrypts a whole plaintext.
pub fn encrypt(
    ikm: &[u8],
    aad: &[u8],
    layout: Layout,
    plain: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(layout.ciphertext_len(plain.len() as u64) as usize);
    let mut e = Encryptor::new(ikm, aad, layout, &mut out)?;
    e.push(plain, &mut out)?;
    e.finish(&mut out)?;
    Ok(out)
}

/// Decrypts a whole ciphertext.
pub fn decrypt(ikm: &[u8], aad: &[u8], layout: Layout, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let n = ct.len() as u64;
    let plain_len = layout.plaintext_len(n)?;
    let cipher = SegmentCipher::for_header(ikm, aad, ct)?;
    let count = layout.segment_count(n);
    let mut out = Vec::with_capacity(plain_len as usize);
    for i in 0..count {
        let (start, end) = layout.cipher_range(i, n);
        let skip = if i == 0 { HEADER } else { 0 };
        out.extend(cipher.open(i, i + 1 == count, &ct[start as usize + skip..end as usize])?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: Layout = Layout { segment: 1 << 20 };
    const SMALL: Layout = Layout { segment: 64 };

    #[test]
    fn segment_boundaries_in_plaintext() {
        // 64-byte segments: 8 plaintext bytes in the first, 48 in the others.
        let (p0, p1) = (SMALL.plain_in(0), SMALL.plain_in(1));
        assert_eq!((p0, p1), (8, 48));
        assert_eq!(SMALL.plain_start(0), 0);
        assert_eq!(SMALL.plain_start(1), 8);
        assert_eq!(SMALL.plain_start(3), 8 + 2 * 48);
        for at in [0, 1, 7, 8, 9, 55, 56, 57, 1000] {
            let b = SMALL.boundary_at_or_after(at);
            assert!(b >= at && b < at + p1, "{at} -> {b}");
            assert_eq!(SMALL.plain_start(SMALL.segment_of(b)), b, "{at} -> {b}");
        }
        // 1 MiB segments: starts at 1048520 + k × 1048560; 4 MiB falls
        // just after the fourth (4194200).
        assert_eq!(MIB.boundary_at_or_after(4 << 20), 1_048_520 + 4 * 1_048_560);
        assert_eq!(MIB.boundary_at_or_after(4_194_200), 4_194_200);
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn sizes_follow_tinks_layout() {
        // Segment 0 holds 1 MiB - 56 plaintext bytes (header 40, tag 16).
        assert_eq!(MIB.plain_in(0), (1 << 20) - 56);
        assert_eq!(MIB.ciphertext_len(0), 56);
        assert_eq!(MIB.ciphertext_len((1 << 20) - 56), 1 << 20);
        assert_eq!(MIB.ciphertext_len((1 << 20) - 55), (1 << 20) + 17);
        for n in [0u64, 1, 7, 8, 9, 55, 56, 57, 200, 1000] {
            let ct = SMALL.ciphertext_len(n);
            assert_eq!(SMALL.plaintext_len(ct).unwrap(), n, "n={n}");
        }
        for n in [
            (1u64 << 20) - 57,
            (1 << 20) - 56,
            (1 << 20) - 55,
            3 << 20,
            0,
            1,
        ] {
            assert_eq!(MIB.plaintext_len(MIB.ciphertext_len(n)).unwrap(), n);
        }
        // Lengths no ciphertext has.
        assert!(SMALL.plaintext_len(55).is_err());
        assert!(
            SMALL.plaintext_len(64 + 16).is_err(),
            "an empty segment after the first"
        );
    }

    #[test]
    fn round_trips_at_and_around_segment_boundaries() {
        let key = [7u8; 32];
        // SMALL: segment 0 carries 8 bytes, the others 48.
        for n in [0, 1, 7, 8, 9, 55, 56, 57, 104, 105, 300] {
            let plain = pattern(n);
            let ct = encrypt(&key, b"aad", SMALL, &plain).unwrap();
            assert_eq!(ct.len() as u64, SMALL.ciphertext_len(n as u64), "n={n}");
            assert_eq!(decrypt(&key, b"aad", SMALL, &ct).unwrap(), plain, "n={n}");
        }
    }

    #[test]
    fn streamed_pushes_of_any_size_give_a_ciphertext_that_decrypts() {
        let key = [3u8; 32];
        let plain = pattern(1000);
        for chunk in [1, 5, 47, 48, 49, 1000] {
            let mut out = Vec::new();
            let mut e = Encryptor::new(&key, b"x", SMALL, &mut out).unwrap();
            for c in plain.chunks(chunk) {
                e.push(c, &mut out).unwrap();
            }
            e.finish(&mut out).unwrap();
            assert_eq!(
                decrypt(&key, b"x", SMALL, &out).unwrap(),
                plain,
                "chunk={chunk}"
            );
        }
    }

    #[test]
    fn a_range_needs_only_the_segments_that_cover_it() {
        let key = [9u8; 32];
        let plain = pattern(500);
        let ct = encrypt(&key, b"r", SMALL, &plain).unwrap();
        let n = ct.len() as u64;
        let cipher = SegmentCipher::for_header(&key, b"r", &ct).unwrap();
        let count = SMALL.segment_count(n);
        for (offset, len) in [
            (0u64, 1u64),
            (7, 2),
            (8, 48),
            (55, 3),
            (490, 10),
            (499, 1),
            (0, 500),
        ] {
            let (a, b) = SMALL.segments_for(offset, len, n);
            let mut got = Vec::new();
            for i in a..=b {
                let (s, e) = SMALL.cipher_range(i, n);
                let skip = if i == 0 { HEADER as u64 } else { 0 };
                got.extend(
                    cipher
                        .open(i, i + 1 == count, &ct[(s + skip) as usize..e as usize])
                        .unwrap(),
                );
            }
            let base = SMALL.plain_start(a);
            let want = &plain[offset as usize..(offset + len) as usize];
            assert_eq!(
                &got[(offset - base) as usize..(offset - base + len) as usize],
                want
            );
        }
    }

    #[test]
    fn a_changed_truncated_or_rebound_ciphertext_yields_no_bytes() {
        let key = [1u8; 32];
        let plain = pattern(300);
        let ct = encrypt(&key, b"tenant=a path=x", SMALL, &plain).unwrap();
        let mut flipped = ct.clone();
        flipped[100] ^= 1;
        assert!(matches!(
            decrypt(&key, b"tenant=a path=x", SMALL, &flipped),
            Err(CryptoError::Authentication(_))
        ));
        // Cut at a segment boundary: the new last segment was sealed as
        // not-last, so it fails.
        let cut = &ct[..128];
        assert!(decrypt(&key, b"tenant=a path=x", SMALL, cut).is_err());
        assert!(decrypt(&key, b"tenant=a path=x", SMALL, &ct[..ct.len() - 1]).is_err());
        assert!(matches!(
            decrypt(&key, b"tenant=b path=x", SMALL, &ct),
            Err(CryptoError::Authentication(0))
        ));
        assert!(decrypt(&[2u8; 32], b"tenant=a path=x", SMALL, &ct).is_err());
        // Two segments swapped.
        let mut swapped = ct.clone();
        let (a, b) = (
            SMALL.cipher_range(1, ct.len() as u64),
            SMALL.cipher_range(2, ct.len() as u64),
        );
        let seg1 = ct[a.0 as usize..a.1 as usize].to_vec();
        let seg2 = ct[b.0 as usize..b.1 as usize].to_vec();
        swapped[a.0 as usize..a.1 as usize].copy_from_slice(&seg2);
        swapped[b.0 as usize..b.1 as usize].copy_from_slice(&seg1);
        assert!(decrypt(&key, b"tenant=a path=x", SMALL, &swapped).is_err());
    }

    #[test]
    fn two_encryptions_of_one_plaintext_differ() {
        let key = [5u8; 32];
        let a = encrypt(&key, b"", MIB, b"same").unwrap();
        let b = encrypt(&key, b"", MIB, b"same").unwrap();
        assert_ne!(a, b, "fresh salt and nonce prefix per object");
    }
}

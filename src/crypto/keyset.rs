//! Tink JSON keysets of AES-GCM-HKDF streaming keys, read and written in
//! exactly the form Tink's own `json_proto_keyset_format` uses, so the file
//! a customer holds opens in Tink (`tink.json_proto_keyset_format.parse`).
//!
//! ```json
//! {"primaryKeyId": 2035380151, "key": [{"keyData": {
//!    "typeUrl": "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
//!    "value": "<base64 of the AesGcmHkdfStreamingKey protobuf>",
//!    "keyMaterialType": "SYMMETRIC"},
//!  "status": "ENABLED", "keyId": 2035380151, "outputPrefixType": "RAW"}]}
//! ```
//!
//! The key protobuf (`aes_gcm_hkdf_streaming.proto`) is `version = 1`,
//! `params = 2 { ciphertext_segment_size = 1, derived_key_size = 2,
//! hkdf_hash_type = 3 }`, `key_value = 3`; it is small enough to encode by
//! hand. Only AES-256 keys with HKDF-SHA256 are accepted (Tink's
//! `AES256_GCM_HKDF_1MB` and `AES256_GCM_HKDF_4KB` templates).

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::streaming::Layout;

pub const TYPE_URL: &str = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey";
/// Tink's `HashType.SHA256`.
const SHA256: u64 = 3;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysetJson {
    primary_key_id: u32,
    key: Vec<KeyJson>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    key_data: KeyDataJson,
    status: String,
    key_id: u32,
    output_prefix_type: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyDataJson {
    type_url: String,
    value: String,
    key_material_type: String,
}

/// One streaming key of a keyset.
pub struct StreamingKey {
    pub id: u32,
    pub layout: Layout,
    /// The key material (HKDF's input).
    material: Zeroizing<Vec<u8>>,
    pub enabled: bool,
}

impl StreamingKey {
    pub fn material(&self) -> &[u8] {
        &self.material
    }
}

impl std::fmt::Debug for StreamingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingKey")
            .field("id", &self.id)
            .field("layout", &self.layout)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A keyset: the primary key encrypts, every enabled key may decrypt.
#[derive(Debug)]
pub struct Keyset {
    pub primary: u32,
    pub keys: Vec<StreamingKey>,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The protobuf fields of `b`: (field number, varint value or bytes).
fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let tag = read_varint(b, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((number, Field::Varint(read_varint(b, &mut pos)?))),
            2 => {
                let len = read_varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                out.push((number, Field::Bytes(&b[pos..end])));
                pos = end;
            }
            w => return Err(format!("unexpected protobuf wire type {w}")),
        }
    }
    Ok(out)
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn encode_key(layout: Layout, material: &[u8]) -> Vec<u8> {
    let mut params = Vec::new();
    params.push(0x08); // 1: ciphertext_segment_size
    varint(layout.segment as u64, &mut params);
    params.push(0x10); // 2: derived_key_size
    varint(32, &mut params);
    params.push(0x18); // 3: hkdf_hash_type
    varint(SHA256, &mut params);
    // 1: version 0, omitted as proto3 omits defaults.
    let mut key = Vec::new();
    key.push(0x12); // 2: params
    varint(params.len() as u64, &mut key);
    key.extend_from_slice(&params);
    key.push(0x1a); // 3: key_value
    varint(material.len() as u64, &mut key);
    key.extend_from_slice(material);
    key
}

fn decode_key(b: &[u8]) -> Result<(Layout, Zeroizing<Vec<u8>>), String> {
    let (mut segment, mut derived, mut hash, mut material) = (None, None, None, None);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(v)) if v != 0 => return Err(format!("key version {v}, not 0")),
            (2, Field::Bytes(p)) => {
                for (m, g) in fields(p)? {
                    match (m, g) {
                        (1, Field::Varint(v)) => segment = Some(v),
                        (2, Field::Varint(v)) => derived = Some(v),
                        (3, Field::Varint(v)) => hash = Some(v),
                        _ => {}
                    }
                }
            }
            (3, Field::Bytes(k)) => material = Some(Zeroizing::new(k.to_vec())),
            _ => {}
        }
    }
    if derived != Some(32) {
        return Err(format!(
            "derived key size {derived:?}: only AES-256 keys (32) are accepted"
        ));
    }
    if hash != Some(SHA256) {
        return Err("only HKDF-SHA256 keys are accepted".into());
    }
    let material = material.ok_or("no key material")?;
    if material.len() < 32 {
        return Err(format!(
            "{} bytes of key material, fewer than 32",
            material.len()
        ));
    }
    let segment = segment.ok_or("no ciphertext segment size")? as usize;
    // Tink's own bound: room for the header, a tag and at least one byte.
    if !(super::streaming::HEADER + super::streaming::TAG + 2..=1 << 30).contains(&segment) {
        return Err(format!("ciphertext segment size {segment} is out of range"));
    }
    Ok((Layout { segment }, material))
}

impl Keyset {
    /// A keyset with one new random AES-256 key (Tink's
    /// `AES256_GCM_HKDF_1MB` template: 1 MiB segments).
    pub fn generate() -> Result<Keyset, String> {
        let mut s = Keyset {
            primary: 0,
            keys: Vec::new(),
        };
        s.add_primary()?;
        Ok(s)
    }

    /// Adds a new random key and makes it the primary (rotation: older
    /// keys stay to decrypt what they encrypted). Returns its id.
    pub fn add_primary(&mut self) -> Result<u32, String> {
        let mut material = Zeroizing::new(vec![0u8; 32]);
        getrandom::getrandom(&mut material).map_err(|e| format!("no randomness: {e}"))?;
        let id = loop {
            let mut b = [0u8; 4];
            getrandom::getrandom(&mut b).map_err(|e| format!("no randomness: {e}"))?;
            let id = u32::from_be_bytes(b) & 0x7fff_ffff;
            if id != 0 && self.keys.iter().all(|k| k.id != id) {
                break id;
            }
        };
        self.keys.push(StreamingKey {
            id,
            layout: Layout { segment: 1 << 20 },
            material,
            enabled: true,
        });
        self.primary = id;
        Ok(id)
    }

    pub fn primary(&self) -> Option<&StreamingKey> {
        self.keys.iter().find(|k| k.id == self.primary && k.enabled)
    }

    pub fn key(&self, id: u32) -> Option<&StreamingKey> {
        self.keys.iter().find(|k| k.id == id && k.enabled)
    }

    /// Parses a cleartext Tink JSON keyset; the error never echoes key material.
    pub fn from_json(text: &str) -> Result<Keyset, String> {
        let json: KeysetJson =
            serde_json::from_str(text).map_err(|e| format!("not a Tink JSON keyset: {e}"))?;
        Self::from_parsed(json)
    }

    /// Parses a binary Tink keyset (the `google.crypto.tink.Keyset`
    /// message an `EncryptedKeyset` wraps).
    pub fn from_proto(b: &[u8]) -> Result<Keyset, String> {
        const STATUS: [&str; 4] = ["UNKNOWN_STATUS", "ENABLED", "DISABLED", "DESTROYED"];
        const PREFIX: [&str; 5] = ["UNKNOWN_PREFIX", "TINK", "LEGACY", "RAW", "CRUNCHY"];
        let name = |names: &[&str], v: u64| names.get(v as usize).unwrap_or(&"UNKNOWN").to_string();
        let mut json = KeysetJson {
            primary_key_id: 0,
            key: Vec::new(),
        };
        for (n, f) in fields(b)? {
            match (n, f) {
                (1, Field::Varint(v)) => json.primary_key_id = v as u32,
                (2, Field::Bytes(k)) => {
                    let mut key = KeyJson {
                        key_data: KeyDataJson {
                            type_url: String::new(),
                            value: String::new(),
                            key_material_type: "SYMMETRIC".into(),
                        },
                        status: STATUS[0].into(),
                        key_id: 0,
                        output_prefix_type: PREFIX[0].into(),
                    };
                    for (m, g) in fields(k)? {
                        match (m, g) {
                            (1, Field::Bytes(d)) => {
                                for (o, h) in fields(d)? {
                                    match (o, h) {
                                        (1, Field::Bytes(u)) => {
                                            key.key_data.type_url =
                                                String::from_utf8_lossy(u).into_owned()
                                        }
                                        (2, Field::Bytes(v)) => {
                                            key.key_data.value =
                                                base64::engine::general_purpose::STANDARD.encode(v)
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            (2, Field::Varint(v)) => key.status = name(&STATUS, v),
                            (3, Field::Varint(v)) => key.key_id = v as u32,
                            (4, Field::Varint(v)) => key.output_prefix_type = name(&PREFIX, v),
                            _ => {}
                        }
                    }
                    json.key.push(key);
                }
                _ => {}
            }
        }
        Self::from_parsed(json)
    }

    /// The keyset as a binary Tink `Keyset` message (holds key material).
    pub fn to_proto(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.push(0x08); // 1: primary_key_id
        varint(self.primary as u64, &mut out);
        for k in &self.keys {
            let value = Zeroizing::new(encode_key(k.layout, &k.material));
            let mut data = Zeroizing::new(Vec::new());
            data.push(0x0a); // 1: type_url
            varint(TYPE_URL.len() as u64, &mut data);
            data.extend_from_slice(TYPE_URL.as_bytes());
            data.push(0x12); // 2: value
            varint(value.len() as u64, &mut data);
            data.extend_from_slice(&value);
            data.push(0x18); // 3: key_material_type SYMMETRIC
            varint(1, &mut data);
            let mut key = Zeroizing::new(Vec::new());
            key.push(0x0a); // 1: key_data
            varint(data.len() as u64, &mut key);
            key.extend_from_slice(&data);
            key.push(0x10); // 2: status
            varint(if k.enabled { 1 } else { 2 }, &mut key);
            key.push(0x18); // 3: key_id
            varint(k.id as u64, &mut key);
            key.push(0x20); // 4: output_prefix_type RAW
            varint(3, &mut key);
            out.push(0x12); // 2: key
            varint(key.len() as u64, &mut out);
            out.extend_from_slice(&key);
        }
        out
    }

    fn from_parsed(json: KeysetJson) -> Result<Keyset, String> {
        let mut keys = Vec::new();
        for k in json.key {
            if k.key_data.type_url != TYPE_URL {
                return Err(format!(
                    "key {} is a {}, not an AES-GCM-HKDF streaming key",
                    k.key_id, k.key_data.type_url
                ));
            }
            if k.output_prefix_type != "RAW" {
                return Err(format!(
                    "key {}: output prefix {}; streaming keys are RAW",
                    k.key_id, k.output_prefix_type
                ));
            }
            let value = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(k.key_data.value.as_bytes())
                    .map_err(|_| format!("key {}: its value is not base64", k.key_id))?,
            );
            let (layout, material) =
                decode_key(&value).map_err(|e| format!("key {}: {e}", k.key_id))?;
            keys.push(StreamingKey {
                id: k.key_id,
                layout,
                material,
                enabled: k.status == "ENABLED",
            });
        }
        let set = Keyset {
            primary: json.primary_key_id,
            keys,
        };
        if set.primary().is_none() {
            return Err(format!(
                "the primary key {} is missing or not enabled",
                set.primary
            ));
        }
        Ok(set)
    }

    /// The keyset as Tink JSON (holds key material: write it like a secret).
    pub fn to_json(&self) -> String {
        let key = self
            .keys
            .iter()
            .map(|k| KeyJson {
                key_data: KeyDataJson {
                    type_url: TYPE_URL.to_string(),
                    value: base64::engine::general_purpose::STANDARD
                        .encode(encode_key(k.layout, &k.material)),
                    key_material_type: "SYMMETRIC".into(),
                },
                status: if k.enabled { "ENABLED" } else { "DISABLED" }.into(),
                key_id: k.id,
                output_prefix_type: "RAW".into(),
            })
            .collect();
        serde_json::to_string_pretty(&KeysetJson {
            primary_key_id: self.primary,
            key,
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_keyset_reads_back_the_same() {
        let mut set = Keyset::generate().unwrap();
        let first = set.primary;
        let second = set.add_primary().unwrap();
        let back = Keyset::from_json(&set.to_json()).unwrap();
        assert_eq!(back.primary, second);
        assert_eq!(back.keys.len(), 2);
        for id in [first, second] {
            let (a, b) = (set.key(id).unwrap(), back.key(id).unwrap());
            assert_eq!(a.material(), b.material());
            assert_eq!(b.layout, Layout { segment: 1 << 20 });
        }
        assert!(!format!("{back:?}").contains(&format!("{:?}", set.key(first).unwrap().material())));
    }

    #[test]
    fn keys_recvault_cannot_use_are_refused_with_the_reason() {
        let set = Keyset::generate().unwrap();
        let json = set.to_json();
        let aes128 = {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let value = v["key"][0]["keyData"]["value"]
                .as_str()
                .unwrap()
                .to_string();
            let mut raw = base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap();
            // derived_key_size 32 -> 16 (the byte after tag 0x10 in params).
            let at = raw.windows(2).position(|w| w == [0x10, 32]).unwrap();
            raw[at + 1] = 16;
            json.replace(
                v["key"][0]["keyData"]["value"].as_str().unwrap(),
                &base64::engine::general_purpose::STANDARD.encode(raw),
            )
        };
        assert!(Keyset::from_json(&aes128)
            .unwrap_err()
            .contains("only AES-256"));
        let other = json.replace("AesGcmHkdfStreamingKey", "AesGcmKey");
        assert!(Keyset::from_json(&other)
            .unwrap_err()
            .contains("not an AES-GCM-HKDF streaming key"));
        assert!(Keyset::from_json("{")
            .unwrap_err()
            .contains("not a Tink JSON keyset"));
        let disabled = json.replace("ENABLED", "DISABLED");
        assert!(Keyset::from_json(&disabled)
            .unwrap_err()
            .contains("primary key"));
    }
}

//! Keysets wrapped by an AWS KMS key, in exactly the form Tink's own AWS
//! KMS integration writes and reads: an `EncryptedKeyset` in Tink's JSON
//! (`encryptedKeyset`: the KMS ciphertext of the binary keyset;
//! `keysetInfo`: its key ids, no key material), the KMS key named by a
//! Tink key URI `aws-kms://arn:aws:kms:<region>:<account>:key/<id>`, no
//! associated data (so no KMS encryption context). A customer holding the
//! KMS key unwraps it with Python Tink:
//! `tink.json_proto_keyset_format.parse_encrypted(text,
//! awskms.new_client(boto3_client=kms, key_uri=uri).get_aead(uri), b"")`.
//!
//! The KMS client takes the standard AWS credential chain and region of the
//! key's ARN; `AWS_ENDPOINT_URL_KMS` points it at another endpoint (a
//! test's KMS, a VPC endpoint).

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyset::Keyset;

/// The scheme of a Tink AWS KMS key URI.
pub const PREFIX: &str = "aws-kms://";

/// The key ARN a Tink key URI names.
pub fn arn_of(uri: &str) -> Result<&str, String> {
    let arn = uri
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("{uri:?} is not an AWS KMS key URI (aws-kms://arn:aws:kms:…)"))?;
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() < 6 || parts[0] != "arn" || parts[2] != "kms" || parts[3].is_empty() {
        return Err(format!(
            "{uri:?} does not name a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)"
        ));
    }
    Ok(arn)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptedKeysetJson {
    encrypted_keyset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyset_info: Option<KeysetInfoJson>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysetInfoJson {
    primary_key_id: u32,
    key_info: Vec<KeyInfoJson>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyInfoJson {
    type_url: String,
    status: String,
    key_id: u32,
    output_prefix_type: String,
}

/// Whether a keyset file's text is an `EncryptedKeyset`.
pub fn is_wrapped(text: &str) -> bool {
    serde_json::from_str::<EncryptedKeysetJson>(text).is_ok()
}

async fn client(arn: &str) -> aws_sdk_kms::Client {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_string();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(region))
        .load()
        .await;
    let mut b = aws_sdk_kms::config::Builder::from(&shared).timeout_config(
        aws_sdk_kms::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .operation_timeout(std::time::Duration::from_secs(30))
            .build(),
    );
    if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL_KMS") {
        b = b.endpoint_url(ep);
    }
    aws_sdk_kms::Client::from_conf(b.build())
}

fn kms_err(what: &str, uri: &str, e: impl std::fmt::Display) -> String {
    format!("KMS {what} with {uri}: {e}")
}

/// Unwraps an `EncryptedKeyset` with the KMS key `uri`.
pub async fn unwrap(text: &str, uri: &str) -> Result<Keyset, String> {
    let arn = arn_of(uri)?;
    let json: EncryptedKeysetJson = serde_json::from_str(text)
        .map_err(|e| format!("not a Tink encrypted keyset (encryptedKeyset): {e}"))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(json.encrypted_keyset.as_bytes())
        .map_err(|_| "encryptedKeyset is not base64".to_string())?;
    let out = client(arn)
        .await
        .decrypt()
        .key_id(arn)
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
        .send()
        .await
        .map_err(|e| kms_err("decrypt", uri, aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let plain = Zeroizing::new(
        out.plaintext()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| format!("KMS decrypt with {uri} returned no plaintext"))?,
    );
    Keyset::from_proto(&plain).map_err(|e| format!("the keyset {uri} unwrapped: {e}"))
}

/// Wraps `set` with the KMS key `uri` into an `EncryptedKeyset` (Tink's
/// JSON); checks that it unwraps to the same keyset before returning it.
pub async fn wrap(set: &Keyset, uri: &str) -> Result<String, String> {
    let arn = arn_of(uri)?;
    let plain = set.to_proto();
    let out = client(arn)
        .await
        .encrypt()
        .key_id(arn)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plain.to_vec()))
        .send()
        .await
        .map_err(|e| kms_err("encrypt", uri, aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let blob = out
        .ciphertext_blob()
        .ok_or_else(|| format!("KMS encrypt with {uri} returned no ciphertext"))?;
    let json = EncryptedKeysetJson {
        encrypted_keyset: base64::engine::general_purpose::STANDARD.encode(blob.as_ref()),
        keyset_info: Some(KeysetInfoJson {
            primary_key_id: set.primary,
            key_info: set
                .keys
                .iter()
                .map(|k| KeyInfoJson {
                    type_url: super::keyset::TYPE_URL.to_string(),
                    status: if k.enabled { "ENABLED" } else { "DISABLED" }.into(),
                    key_id: k.id,
                    output_prefix_type: "RAW".into(),
                })
                .collect(),
        }),
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    let back = unwrap(&text, uri).await?;
    if back.to_proto() != plain {
        return Err(format!(
            "the keyset wrapped with {uri} does not unwrap to itself"
        ));
    }
    Ok(text)
}

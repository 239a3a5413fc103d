//! Tencent Cloud API 3.0's request signature, TC3-HMAC-SHA256, checked the
//! way Tencent's "Signature v3" document describes it, from the request as
//! received: the `Authorization` header names the key, the date and service
//! it was signed for and the headers it covers; the canonical request is
//! rebuilt from those headers and the body; the signature is recomputed with
//! the key derived from the secret key, the date and the service.
//!
//! A pure function of the request and `now`, so every rule is testable
//! without a server.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm API 3.0 accepts in `Authorization`.
const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// How far `X-TC-Timestamp` may be from the server's clock, either way: the
/// document's "five minutes".
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// What the server holds to check a request: one key pair, an optional
/// temporary-credential token, and the service the requests are for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The SecretId the key pair is known by.
    pub secret_id: &'a str,
    /// The SecretKey the signature is keyed with.
    pub secret_key: &'a str,
    /// When set, `X-TC-Token` must carry exactly this; when unset, a request
    /// must carry none (a permanent key has no token).
    pub token: Option<&'a str>,
    /// The service in the credential scope (`live` for the live API).
    pub service: &'a str,
}

/// Why a request's authentication was refused; each maps to the error code
/// Tencent answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or one not of the TC3 form.
    InvalidAuthorization(String),
    /// `X-TC-Timestamp` is missing.
    MissingTimestamp,
    /// `X-TC-Timestamp` is not a whole number of seconds.
    InvalidTimestamp,
    /// The SecretId in the credential is not the one the server knows.
    SecretIdNotFound,
    /// `X-TC-Timestamp` is more than five minutes from the server's clock.
    SignatureExpire,
    /// `X-TC-Token` is missing, unexpected or not the server's token.
    TokenFailure,
    /// The signature does not verify (or the scope, or the signed headers,
    /// are not what they must be); the text says which, for a test's failure
    /// message only: Tencent's own message is generic.
    SignatureFailure(String),
}

impl AuthError {
    /// Tencent's error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidAuthorization(_) => "AuthFailure.InvalidAuthorization",
            Self::MissingTimestamp => "MissingParameter",
            Self::InvalidTimestamp => "InvalidParameter",
            Self::SecretIdNotFound => "AuthFailure.SecretIdNotFound",
            Self::SignatureExpire => "AuthFailure.SignatureExpire",
            Self::TokenFailure => "AuthFailure.TokenFailure",
            Self::SignatureFailure(_) => "AuthFailure.SignatureFailure",
        }
    }

    /// A message for the error response. It never contains a secret: only
    /// what the client sent or a fixed sentence.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidAuthorization(why) => format!("Authorization is invalid: {why}"),
            Self::MissingTimestamp => "The parameter X-TC-Timestamp is missing.".to_owned(),
            Self::InvalidTimestamp => "X-TC-Timestamp is not a Unix time in seconds.".to_owned(),
            Self::SecretIdNotFound => "The SecretId is not found.".to_owned(),
            Self::SignatureExpire => "Signature expired: X-TC-Timestamp and the server's \
                 time differ by more than five minutes."
                .to_owned(),
            Self::TokenFailure => "The token is invalid.".to_owned(),
            Self::SignatureFailure(why) => format!(
                "The provided credentials could not be validated ({why}). Please check \
                 your signature is correct."
            ),
        }
    }
}

/// The parts of a TC3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The SecretId in `Credential=`.
    pub secret_id: String,
    /// The `YYYY-MM-DD` date in the credential scope.
    pub date: String,
    /// The service in the credential scope.
    pub service: String,
    /// `SignedHeaders=`, split on `;`, as the client listed them.
    pub signed_headers: Vec<String>,
    /// `Signature=`, hex.
    pub signature: String,
}

/// Parses `TC3-HMAC-SHA256 Credential={id}/{date}/{service}/tc3_request,
/// SignedHeaders={h1;h2}, Signature={hex}`. The three fields are split on
/// commas and trimmed, so the spaces after the commas are optional.
pub fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let invalid = |why: &str| AuthError::InvalidAuthorization(why.to_owned());
    let fields = value
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| invalid("it does not start with TC3-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        let (name, value) = field
            .trim()
            .split_once('=')
            .ok_or_else(|| invalid("a field is not name=value"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(invalid("an unknown field")),
        };
        if slot.replace(value).is_some() {
            return Err(invalid("a field is repeated"));
        }
    }
    let credential = credential.ok_or_else(|| invalid("Credential is missing"))?;
    let signed_headers = signed_headers.ok_or_else(|| invalid("SignedHeaders is missing"))?;
    let signature = signature.ok_or_else(|| invalid("Signature is missing"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [secret_id, date, service, "tc3_request"] = scope[..] else {
        return Err(invalid(
            "Credential is not SecretId/date/service/tc3_request",
        ));
    };
    Ok(Authorization {
        secret_id: secret_id.to_owned(),
        date: date.to_owned(),
        service: service.to_owned(),
        signed_headers: signed_headers.split(';').map(str::to_owned).collect(),
        signature: signature.to_owned(),
    })
}

/// Checks a POST to `/` with `headers` and `body`, at Unix time `now`,
/// against `expected`. The order of the checks is the fake's guess at
/// Tencent's: the header's form, the key, the clock, the token, then the
/// signature itself.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    expected: &Expected<'_>,
    now: i64,
) -> Result<(), AuthError> {
    let value = headers
        .get("authorization")
        .ok_or_else(|| AuthError::InvalidAuthorization("the header is missing".to_owned()))?
        .to_str()
        .map_err(|_| AuthError::InvalidAuthorization("the header is not ASCII".to_owned()))?;
    let authorization = parse_authorization(value)?;
    if authorization.secret_id != expected.secret_id {
        return Err(AuthError::SecretIdNotFound);
    }
    let timestamp = headers
        .get("x-tc-timestamp")
        .ok_or(AuthError::MissingTimestamp)?
        .to_str()
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or(AuthError::InvalidTimestamp)?;
    if now.abs_diff(timestamp) > MAX_CLOCK_SKEW_SECS.unsigned_abs() {
        return Err(AuthError::SignatureExpire);
    }
    let token = headers.get("x-tc-token").map(|value| value.as_bytes());
    if token != expected.token.map(str::as_bytes) {
        return Err(AuthError::TokenFailure);
    }
    let failure = |why: String| AuthError::SignatureFailure(why);
    // The scope's date is the UTC date of the timestamp: a client that used
    // its local date fails around midnight, which is why Tencent checks it.
    let date = utc_date(timestamp).ok_or(AuthError::InvalidTimestamp)?;
    if authorization.date != date {
        return Err(failure(format!(
            "the credential's date {} is not {date}, the UTC date of X-TC-Timestamp",
            authorization.date
        )));
    }
    if authorization.service != expected.service {
        return Err(failure(format!(
            "the credential's service {} is not {}",
            authorization.service, expected.service
        )));
    }
    if headers.get("x-tc-content-sha256").is_some() {
        // Tencent lets a client sign "UNSIGNED-PAYLOAD" instead of the body;
        // the fake refuses it, so a client under test always signs its body.
        return Err(failure(
            "the fake does not accept X-TC-Content-SHA256 (unsigned payloads)".to_owned(),
        ));
    }
    let canonical = canonical_request(headers, &authorization.signed_headers, body)?;
    let string_to_sign = string_to_sign(timestamp, &date, expected.service, &canonical);
    let signature = sign(
        expected.secret_key,
        &date,
        expected.service,
        &string_to_sign,
    );
    if signature != authorization.signature {
        return Err(failure("the signature does not match".to_owned()));
    }
    Ok(())
}

/// The canonical request, `POST\n/\n\n{headers}\n{signed headers}\n{hex
/// sha256(body)}`, from the headers the client listed: names lowercased and
/// sorted, each `name:value\n` with the value trimmed and lowercased (so
/// `X-TC-Action: DescribeInstances` signs as `x-tc-action:describeinstances`).
/// `content-type` and `host` must be among them; a listed header the request
/// does not carry fails.
pub fn canonical_request(
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> Result<String, AuthError> {
    let failure = |why: String| AuthError::SignatureFailure(why);
    let mut names: Vec<String> = signed_headers
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    for required in ["content-type", "host"] {
        if !names.iter().any(|name| name == required) {
            return Err(failure(format!(
                "SignedHeaders does not include {required}"
            )));
        }
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|value| value.to_str())
            .collect::<Result<_, _>>()
            .map_err(|_| failure(format!("the signed header {name} is not ASCII")))?;
        if values.is_empty() {
            return Err(failure(format!(
                "the signed header {name} is not in the request"
            )));
        }
        let value = values.join(",").trim().to_ascii_lowercase();
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    Ok(format!(
        "POST\n/\n\n{canonical_headers}\n{}\n{}",
        names.join(";"),
        hex::encode(Sha256::digest(body))
    ))
}

/// `TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{hex
/// sha256(canonical request)}`.
pub fn string_to_sign(timestamp: i64, date: &str, service: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// The hex signature of `string_to_sign`, keyed by HMAC-SHA256 chained from
/// `"TC3" + secret_key` over the date, the service and `tc3_request`.
pub fn sign(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    hex::encode(hmac_sha256(&secret_signing, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The `YYYY-MM-DD` UTC date of a Unix time, or `None` out of `time`'s range.
pub fn utc_date(unix: i64) -> Option<String> {
    let date = time::OffsetDateTime::from_unix_timestamp(unix).ok()?.date();
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

//! A small TC3-HMAC-SHA256 client for the fake's own tests, written apart
//! from the fake's verifier (and from recordhook), so a mistake in one is
//! not mirrored in the other. It signs `content-type`, `host` and
//! `x-tc-action`, as Tencent's current "Signature v3" example does (the SDK
//! signs only the first two, which `sdk` covers), and each knob lets a test
//! break one thing.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::tencent_fake::FakeTencent;

pub const SECRET_ID: &str = "AKIDreconcileFAKE0000000000000000001";
pub const SECRET_KEY: &str = "reconcile-fake-secret-key-0000000001";

/// One request to the fake, valid unless a test changes a field.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    pub version: String,
    /// The body signed; also the body sent, unless `sent_body` is set.
    pub body: String,
    /// A different body sent under the signature of `body`.
    pub sent_body: Option<String>,
    pub secret_id: String,
    pub secret_key: String,
    pub token: Option<String>,
    pub timestamp: i64,
    /// The credential scope's date; the timestamp's UTC date when unset.
    pub scope_date: Option<String>,
    pub service: String,
    /// Lowercase, sorted, `;`-joined in `Authorization`.
    pub signed_headers: Vec<&'static str>,
}

impl Call {
    /// A correctly signed call of `action` with `body`, timestamped now.
    pub fn new(action: &str, body: &Value) -> Self {
        Self {
            action: action.to_owned(),
            version: "2018-08-01".to_owned(),
            body: body.to_string(),
            sent_body: None,
            secret_id: SECRET_ID.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            token: None,
            timestamp: now(),
            scope_date: None,
            service: "live".to_owned(),
            signed_headers: vec!["content-type", "host", "x-tc-action"],
        }
    }

    /// Sends it; the answer's `Response` object.
    pub async fn send(&self, fake: &FakeTencent) -> Value {
        const CONTENT_TYPE: &str = "application/json; charset=utf-8";
        let host = fake.host();
        let date = self
            .scope_date
            .clone()
            .unwrap_or_else(|| utc_date(self.timestamp));
        let header_value = |name: &str| match name {
            "content-type" => CONTENT_TYPE.to_owned(),
            "host" => host.clone(),
            "x-tc-action" => self.action.to_lowercase(),
            other => panic!("the test signer does not sign {other}"),
        };
        let mut names = self.signed_headers.clone();
        names.sort_unstable();
        let canonical_headers: String = names
            .iter()
            .map(|name| format!("{name}:{}\n", header_value(name)))
            .collect();
        let signed = names.join(";");
        let canonical = format!(
            "POST\n/\n\n{canonical_headers}\n{signed}\n{}",
            hex::encode(Sha256::digest(self.body.as_bytes()))
        );
        let scope = format!("{date}/{}/tc3_request", self.service);
        let to_sign = format!(
            "TC3-HMAC-SHA256\n{}\n{scope}\n{}",
            self.timestamp,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = [date.as_str(), self.service.as_str(), "tc3_request"]
            .iter()
            .fold(
                format!("TC3{}", self.secret_key).into_bytes(),
                |key, part| hmac(&key, part),
            );
        let signature = hex::encode(hmac(&key, &to_sign));
        let authorization = format!(
            "TC3-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.secret_id
        );
        let mut request = reqwest::Client::new()
            .post(fake.endpoint())
            .header("Authorization", authorization)
            .header("Content-Type", CONTENT_TYPE)
            .header("X-TC-Action", &self.action)
            .header("X-TC-Version", &self.version)
            .header("X-TC-Timestamp", self.timestamp.to_string())
            .body(self.sent_body.clone().unwrap_or_else(|| self.body.clone()));
        if let Some(token) = &self.token {
            request = request.header("X-TC-Token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "the fake answers API errors with 200"
        );
        let answer: Value = response.json().await.unwrap();
        answer["Response"].clone()
    }
}

/// The error code in a `Response`, if it is an error.
pub fn error_code(response: &Value) -> Option<&str> {
    response["Error"]["Code"].as_str()
}

pub fn now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// `YYYY-MM-DD`, the UTC date of a Unix time (days since the epoch turned
/// into a civil date, without the fake's date code).
pub fn utc_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn hmac(key: &[u8], message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `YYYY-MM-DDThh:mm:ssZ`, UTC.
pub fn iso(unix: i64) -> String {
    let seconds = unix.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        utc_date(unix),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `YYYY-MM-DD hh:mm:ss`, Beijing time (UTC+8).
pub fn beijing(unix: i64) -> String {
    let local = unix + 8 * 3600;
    let seconds = local.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        utc_date(local),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

//! The helper commands: `check-config`, `sign`, `send-test`, `healthcheck`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::configuration::load_for_file;
use crate::http::HEALTH_PATH;
use crate::protocol::expected_sign;
use crate::sinks;

/// How long a helper waits for an answer (CSS itself waits about 20 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Arguments of `send-test`.
#[derive(Debug, clap::Args)]
pub struct SendTestArgs {
    /// The callback URL, e.g. https://hooks.example.com/callback
    #[arg(long)]
    pub url: String,
    /// The callback key to sign with.
    #[arg(long, env = "RECORDHOOK_SIGN_KEY", hide_env_values = true)]
    pub key: String,
    /// event_type of the generated callback.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub event_type: i64,
    /// stream_id of the generated callback.
    #[arg(long, default_value = "recordhook_test")]
    pub stream_id: String,
    /// Send the JSON object in this file instead (re-signed with a fresh `t`).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// `check-config`: validate everything the server would check at start-up
/// (keys present and readable, TLS files, sinks buildable) and print the result.
/// With a PostgreSQL spool, also connect and report on its schema.
pub async fn check_config(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = load_for_file(config)?;
    let authenticator = settings.auth.authenticator()?;
    if let Some(tls) = &settings.server.tls {
        crate::tls::acceptor(tls)?;
    }
    sinks::build(&settings.sinks)?;
    print!("{}", settings.to_redacted_toml()?);
    if let Some(postgres) = settings.spool.options().postgres {
        eprintln!("{}", crate::spool::check_postgres(&postgres).await?);
    }
    if authenticator.is_signed() {
        eprintln!(
            "configuration is valid ({} callback key(s))",
            authenticator.key_count()
        );
    } else {
        eprintln!(
            "configuration is valid; WARNING: auth.allow_unsigned accepts unauthenticated callbacks"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sign`: print `{"t": …, "sign": …}`.
pub fn sign(key: &str, t: Option<i64>) -> anyhow::Result<ExitCode> {
    let t = t.unwrap_or_else(|| unix_now() + 600);
    println!("{}", json!({"t": t, "sign": expected_sign(key, t)}));
    Ok(ExitCode::SUCCESS)
}

/// A realistic recording callback, unique per call, so it is never a duplicate.
pub fn sample_callback(event_type: i64, stream_id: &str, now: SystemTime) -> Value {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let file_id = format!("recordhook-test-{millis}");
    json!({
        "event_type": event_type,
        "appid": 1_000_000,
        "app": "push.example.com",
        "appname": "live",
        "stream_id": stream_id,
        "channel_id": stream_id,
        "file_id": file_id,
        "record_file_id": file_id,
        "file_format": "mp4",
        "task_id": "",
        "start_time": secs.saturating_sub(60),
        "end_time": secs,
        "start_time_usec": 0,
        "end_time_usec": 0,
        "duration": 60,
        "file_size": 1_048_576,
        "stream_param": "recordhook=send-test",
        "video_url": format!("https://example.invalid/recordhook-test/{stream_id}/{file_id}.mp4"),
        "media_start_time": 0,
        "record_bps": 0,
        "callback_ext": "{\"video_codec\":\"h264\",\"resolution\":\"1280x720\"}",
    })
}

/// `send-test`: POST a signed callback; exit 0 only on 200.
pub async fn send_test(args: SendTestArgs) -> anyhow::Result<ExitCode> {
    let mut body = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|err| anyhow::anyhow!("{} is not JSON: {err}", path.display()))?
        }
        None => sample_callback(args.event_type, &args.stream_id, SystemTime::now()),
    };
    let Some(fields) = body.as_object_mut() else {
        anyhow::bail!("the callback must be a JSON object");
    };
    let t = unix_now() + 600;
    fields.insert("t".to_owned(), t.into());
    fields.insert("sign".to_owned(), expected_sign(&args.key, t).into());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let response = client
        .post(&args.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("POST {} failed: {err}", args.url))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("HTTP {status}");
    println!("{text}");
    Ok(if status == reqwest::StatusCode::OK {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The health URL of a server listening on `listen`: a wildcard address is
/// reached through loopback.
pub fn health_url(listen: SocketAddr, tls: bool) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!(
        "{scheme}://{}{HEALTH_PATH}",
        SocketAddr::new(ip, listen.port())
    )
}

/// `healthcheck`: exit 0 when the health URL answers 200.
pub async fn healthcheck(config: Option<&Path>, url: Option<String>) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url,
        None => {
            let settings = load_for_file(config)?;
            health_url(settings.server.listen, settings.server.tls.is_some())
        }
    };
    // Liveness on loopback: the certificate names the public host, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .danger_accept_invalid_certs(true)
        .build()?;
    match client.get(&url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            println!("{url}: healthy");
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            eprintln!("{url}: HTTP {}", response.status());
            Ok(ExitCode::FAILURE)
        }
        Err(err) => {
            eprintln!("{url}: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_urls_reach_wildcard_listeners_through_loopback() {
        assert_eq!(
            health_url("0.0.0.0:8080".parse().unwrap(), false),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(
            health_url("[::]:9000".parse().unwrap(), true),
            "https://[::1]:9000/healthz"
        );
        assert_eq!(
            health_url("10.1.2.3:80".parse().unwrap(), false),
            "http://10.1.2.3:80/healthz"
        );
    }

    #[test]
    fn the_sample_callback_reads_as_a_recording_without_warnings() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let Value::Object(fields) = sample_callback(100, "s1", now) else {
            panic!("not an object")
        };
        let mut warnings = Vec::new();
        let recording = crate::protocol::Recording::read(&fields, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(recording.stream_id.as_deref(), Some("s1"));
        assert_eq!(recording.content_start_time, Some(1_700_000_000 - 60));
        assert!(
            recording.unknown_fields.is_empty(),
            "{:?}",
            recording.unknown_fields
        );
    }
}

//! PostgreSQL servers (and PgBouncers) a test starts itself: Debian's
//! `initdb` and `pg_ctl` on a free port in a temporary directory, run as the
//! `postgres` user (PostgreSQL refuses root), with TLS from a CA made here
//! with rcgen. The server's default is `synchronous_commit = off`, so a
//! session that shows `on` was set so by its client. Each is stopped when
//! dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

/// Debian's PostgreSQL 15 programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Debian's PgBouncer.
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// The user who holds a client certificate (its common name) and may log
/// in only with it.
pub const CERT_USER: &str = "certuser";

/// What the servers need that is missing on this machine, if anything.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<String> = [
        format!("{BIN}/initdb"),
        format!("{BIN}/pg_ctl"),
        PGBOUNCER.to_owned(),
        "/usr/sbin/runuser".to_owned(),
    ]
    .into_iter()
    .filter(|path| !Path::new(path).exists())
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// A free TCP port on 127.0.0.1 (free when asked; nobody else here binds
/// ports at random in the moment between).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1) and
/// a client certificate for [`CERT_USER`], as PEM files in `dir`.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    pub fn make(dir: &Path, name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, common_name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            (params.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "localhost",
        );
        let (client, client_key) = leaf(Vec::new(), CERT_USER);
        let write = |file: &str, pem: String| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
        }
    }
}

/// Runs `program` with `args` as the `postgres` user; panics with its
/// output when it fails.
fn as_postgres(program: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes `path` (and what is in it) the `postgres` user's.
fn give_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until something accepts TCP connections on `port`.
fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PostgreSQL server of the test's own.
pub struct LocalPostgres {
    pub port: u16,
    /// Its certificates, when it has TLS.
    pub certificates: Option<Certificates>,
    dir: TempDir,
}

impl LocalPostgres {
    /// Starts a server, with TLS (`ssl = on`, certificates made here, and
    /// [`CERT_USER`] admitted by certificate only) or without.
    pub async fn start(tls: bool) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(tls))
            .await
            .unwrap()
    }

    fn start_blocking(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        let certificates = tls.then(|| Certificates::make(root, "server"));
        give_to_postgres(root);
        if let Some(certificates) = &certificates {
            for key in [&certificates.server_key, &certificates.client_key] {
                std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
            }
        }
        let data = root.join("data");
        as_postgres(
            &format!("{BIN}/initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
            ],
        );
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             synchronous_commit = off\nfsync = off\nmax_connections = 60\n",
            root.display()
        );
        let mut hba = "local all all trust\n".to_owned();
        match &certificates {
            Some(certificates) => {
                conf.push_str(&format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                    certificates.server_cert.display(),
                    certificates.server_key.display(),
                    certificates.ca.display()
                ));
                hba.push_str(&format!("hostssl all {CERT_USER} 127.0.0.1/32 cert\n"));
            }
            None => conf.push_str("ssl = off\n"),
        }
        hba.push_str("host all all 127.0.0.1/32 trust\n");
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let log = root.join("postgres.log");
        as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Self {
            port,
            certificates,
            dir,
        }
    }

    /// Creates a database (owned by `postgres`) and [`CERT_USER`], a
    /// superuser (the spool creates its tables), if missing; returns the
    /// database's name.
    pub async fn create_database(&self) -> String {
        let name = format!("recordhook_tls_{:08x}", fastrand::u32(..));
        let client = crate::postgres::connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        ))
        .await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "DO $$ BEGIN
                     CREATE ROLE {CERT_USER} LOGIN SUPERUSER;
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
            ))
            .await
            .unwrap();
        name
    }

    /// The directory files of the test may go in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{BIN}/pg_ctl")])
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A PgBouncer in front of a [`LocalPostgres`], as the `postgres` user.
pub struct PgBouncer {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl PgBouncer {
    /// Starts one with `pool_mode`, clients in plain TCP with trust;
    /// `ignoring_options` sets `ignore_startup_parameters = options` (what
    /// one must set for clients that send `options`, which then silently
    /// has no effect).
    pub async fn start(server: &LocalPostgres, pool_mode: &str, ignoring_options: bool) -> Self {
        let (server_port, pool_mode) = (server.port, pool_mode.to_owned());
        let ignored = if ignoring_options { "options" } else { "" };
        tokio::task::spawn_blocking(move || Self::start_blocking(server_port, &pool_mode, ignored))
            .await
            .unwrap()
    }

    fn start_blocking(server_port: u16, pool_mode: &str, ignored: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        let ini = root.join("pgbouncer.ini");
        let log = root.join("pgbouncer.log");
        std::fs::write(root.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
                 ignore_startup_parameters = {ignored}\nmax_client_conn = 200\n\
                 default_pool_size = 20\nlogfile = {}\n",
                root.join("userlist.txt").display(),
                log.display()
            ),
        )
        .unwrap();
        give_to_postgres(root);
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", PGBOUNCER])
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "pgbouncer", &log);
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes the signal on to PgBouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

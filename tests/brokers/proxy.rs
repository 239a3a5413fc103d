//! A TCP proxy a test controls, put between recordhook and a shared broker
//! so the test can take the broker away from recordhook alone: [`Proxy::cut`]
//! closes every open connection and turns new ones away, [`Proxy::restore`]
//! lets them through again.
//!
//! While cut, the proxy still accepts and closes at once rather than
//! closing its listener: the port stays the test's own, so nothing else can
//! take it before [`Proxy::restore`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    address: SocketAddr,
    open: watch::Sender<bool>,
    /// Connections being piped right now.
    active: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` forwarding to `upstream`, open.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (open, watching) = watch::channel(true);
        let active = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&active);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watching.borrow() {
                    drop(client);
                    continue;
                }
                let mut watching = watching.clone();
                let counter = Arc::clone(&counter);
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = watching.wait_for(|open| !*open) => {}
                        }
                        // Both ends close here.
                    }
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            open,
            active,
            task,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection through the proxy and turns new ones away;
    /// returns once every connection is closed.
    pub async fn cut(&self) {
        self.open.send_replace(false);
        while self.active.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.open.send_replace(false);
        self.task.abort();
    }
}

//! A TCP proxy between a Kafka producer and its broker that loses one
//! produce answer: it relays the first produce request to the broker, then
//! cuts the connection instead of relaying the broker's answer, as a network
//! failure after the broker stored the batch would. Every connection but
//! that one is piped as it is. It reads the producer id, epoch and base
//! sequence of each produce request's record batches, which is what lets a
//! broker recognise a batch sent again.
//!
//! The broker must advertise the proxy's address, or the producer would
//! reach the broker directly after its first metadata request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Kafka's API key of a produce request.
const PRODUCE: i16 = 0;

/// A record batch's header fields that identify it to an idempotent broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
}

#[derive(Default)]
struct Seen {
    /// The batches of every produce request, in the order sent.
    batches: Mutex<Vec<Batch>>,
    /// Set once a produce request has been taken to be cut.
    armed: AtomicBool,
    /// Set once its answer was dropped and the connection cut.
    cut: AtomicBool,
}

pub struct ProduceCut {
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl ProduceCut {
    /// Proxies connections to `listener` to `upstream`.
    pub fn start(listener: TcpListener, upstream: SocketAddr) -> Self {
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, &seen).await;
                    }
                });
            }
        });
        Self { seen, task }
    }

    /// Whether a produce answer was dropped and its connection cut.
    pub fn cut(&self) -> bool {
        self.seen.cut.load(Ordering::SeqCst)
    }

    /// The record batches of every produce request so far.
    pub fn batches(&self) -> Vec<Batch> {
        self.seen.batches.lock().unwrap().clone()
    }
}

impl Drop for ProduceCut {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pipes one connection, frame by frame, until either side closes or the
/// answer to the cut request comes back.
async fn relay(client: TcpStream, server: TcpStream, seen: &Seen) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut_answer: Mutex<Option<i32>> = Mutex::new(None);
    let requests = async {
        while let Some(frame) = read_frame(&mut client_read).await {
            if let Some((correlation, batches)) = produce_request(&frame[4..]) {
                seen.batches.lock().unwrap().extend(batches);
                if !seen.armed.swap(true, Ordering::SeqCst) {
                    *cut_answer.lock().unwrap() = Some(correlation);
                }
            }
            if server_write.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let answers = async {
        while let Some(frame) = read_frame(&mut server_read).await {
            let correlation = i32::from_be_bytes(frame[4..8].try_into().unwrap());
            if *cut_answer.lock().unwrap() == Some(correlation) {
                seen.cut.store(true, Ordering::SeqCst);
                return;
            }
            if client_write.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
    // Both halves of both connections are dropped here: cut.
}

/// One size-prefixed Kafka frame, prefix included; `None` at the end.
async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut size = [0; 4];
    from.read_exact(&mut size).await.ok()?;
    let mut frame = size.to_vec();
    frame.resize(4 + usize::try_from(u32::from_be_bytes(size)).ok()?, 0);
    from.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// A request body's bytes, read in order.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<usize> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    /// A length: compact (unsigned varint, plus one) in flexible versions,
    /// else an `i16` or `i32`; `None` for null.
    fn length(&mut self, flexible: bool, wide: bool) -> Option<Option<usize>> {
        Some(if flexible {
            self.uvarint()?.checked_sub(1)
        } else if wide {
            usize::try_from(self.i32()?).ok()
        } else {
            usize::try_from(self.i16()?).ok()
        })
    }
    fn skip_tags(&mut self, flexible: bool) -> Option<()> {
        if flexible {
            for _ in 0..self.uvarint()? {
                self.uvarint()?;
                let size = self.uvarint()?;
                self.take(size)?;
            }
        }
        Some(())
    }
}

/// A produce request's correlation id and record batches; `None` for
/// another request (or one this cannot read).
fn produce_request(body: &[u8]) -> Option<(i32, Vec<Batch>)> {
    let mut r = Reader(body);
    if r.i16()? != PRODUCE {
        return None;
    }
    let version = r.i16()?;
    let correlation = r.i32()?;
    // Flexible versions (9+) use compact lengths and tagged fields, except
    // for the header's client id.
    let flexible = version >= 9;
    if let Some(len) = r.length(false, false)? {
        r.take(len)?;
    }
    r.skip_tags(flexible)?;
    if let Some(len) = r.length(flexible, false)? {
        r.take(len)?; // transactional id
    }
    r.i16()?; // acks
    r.i32()?; // timeout
    let mut batches = Vec::new();
    for _ in 0..r.length(flexible, true)?.unwrap_or(0) {
        let name = r.length(flexible, false)?.unwrap_or(0);
        r.take(name)?;
        for _ in 0..r.length(flexible, true)?.unwrap_or(0) {
            r.i32()?; // partition
            let size = r.length(flexible, true)?.unwrap_or(0);
            let mut records = r.take(size)?;
            // Record batches (magic 2), one after another.
            while records.len() >= 61 {
                let length =
                    usize::try_from(i32::from_be_bytes(records[8..12].try_into().ok()?)).ok()?;
                let at = |from: usize, n: usize| records.get(from..from + n);
                batches.push(Batch {
                    producer_id: i64::from_be_bytes(at(43, 8)?.try_into().ok()?),
                    producer_epoch: i16::from_be_bytes(at(51, 2)?.try_into().ok()?),
                    base_sequence: i32::from_be_bytes(at(53, 4)?.try_into().ok()?),
                    records: i32::from_be_bytes(at(57, 4)?.try_into().ok()?),
                });
                records = records.get(12 + length..)?;
            }
            r.skip_tags(flexible)?;
        }
        r.skip_tags(flexible)?;
    }
    Some((correlation, batches))
}

//! A hand-written HTTP/1.1 image source on loopback, for faults that need
//! control over the socket: a body cut short with a clean close, a body that
//! stalls mid-way, an endless chunked body. Each connection serves one
//! request; `plan(n)` decides the answer to the n-th request (0-based).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
pub enum Answer {
    /// `200` with Content-Length and the whole body.
    Full(Vec<u8>),
    /// Content-Length of the whole body, only the first `n` bytes, then a
    /// clean close (FIN).
    Short(Vec<u8>, usize),
    /// Content-Length of the whole body, the first `n` bytes, then nothing
    /// until the source is dropped.
    Stall(Vec<u8>, usize),
    /// `200` chunked with no length: `head`, then 64 KiB chunks for as long
    /// as the client reads (up to 256 MiB).
    Endless(Vec<u8>),
}

pub struct RawSource {
    pub addr: String,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
}

type Plan = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

impl RawSource {
    pub async fn start(plan: impl Fn(usize) -> Answer + Send + Sync + 'static) -> RawSource {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let plan: Plan = Arc::new(plan);
        let (rq, st, sp) = (requests.clone(), sent.clone(), stop.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (plan, rq, st, sp) = (plan.clone(), rq.clone(), st.clone(), sp.clone());
                tokio::spawn(async move { serve(stream, plan, rq, st, sp).await });
            }
        });
        RawSource {
            addr,
            requests,
            sent,
            accept,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT/path`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Body bytes written to sockets so far (for `Endless`).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for RawSource {
    fn drop(&mut self) {
        self.stop.notify_waiters();
        self.accept.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    plan: Plan,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    stop: Arc<tokio::sync::Notify>,
) {
    // Read the request head; the body (if any) does not matter.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let answer = plan(n);
    let fixed = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match answer {
        Answer::Full(body) => {
            let _ = stream.write_all(fixed(body.len()).as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
        Answer::Short(body, cut) => {
            let _ = stream.write_all(fixed(body.len()).as_bytes()).await;
            let _ = stream.write_all(&body[..cut.min(body.len())]).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        }
        Answer::Stall(body, cut) => {
            let _ = stream.write_all(fixed(body.len()).as_bytes()).await;
            let _ = stream.write_all(&body[..cut.min(body.len())]).await;
            let _ = stream.flush().await;
            // Hold the connection open, reading nothing, until dropped.
            stop.notified().await;
        }
        Answer::Endless(head) => {
            let start = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if stream.write_all(start.as_bytes()).await.is_err() {
                return;
            }
            let mut chunk = head;
            let filler = vec![0x5au8; 64 * 1024];
            let mut total = 0u64;
            while total < 256 << 20 {
                let frame = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk.clone(),
                    b"\r\n".to_vec(),
                ]
                .concat();
                let write = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&frame));
                match write.await {
                    Ok(Ok(())) => {
                        total += chunk.len() as u64;
                        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                    _ => return,
                }
                chunk = filler.clone();
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
    }
}

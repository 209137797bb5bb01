//! A stand-in for Replicate's file host (`replicate.delivery`) with fault
//! injection per path. Paths are matched without the query string.

use super::server::{self, full, text_response, Body, Running};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    files: HashMap<String, (Bytes, String)>,
    gets: HashMap<String, usize>,
    requests: Vec<(String, String)>,
    expired: HashSet<String>,
    fail_first: HashMap<String, (usize, u16)>,
    slow: HashMap<String, Duration>,
    truncate: HashMap<String, usize>,
    pause: HashMap<String, Duration>,
    redirect: HashMap<String, String>,
}

pub struct FileHost {
    state: Arc<Mutex<State>>,
    running: Running,
}

fn norm(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

impl FileHost {
    /// Starts a file host on 127.0.0.1 with a free port.
    pub async fn start() -> FileHost {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts a file host on a given address (e.g. to come back on the same port).
    pub async fn start_on(addr: &str) -> FileHost {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let handler: server::Handler = Arc::new(move |req| handle(st.clone(), req).boxed());
        let running = server::spawn(addr, handler).await;
        FileHost { state, running }
    }

    /// `127.0.0.1:PORT`: what tests put in `REPLICATE_HOSTS`.
    pub fn addr(&self) -> String {
        self.running.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/path`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, norm(path))
    }

    /// Serves `bytes` at `path` with `content_type` ("" sends no Content-Type).
    /// Also clears an earlier `expire` of that path.
    pub fn add(&self, path: &str, bytes: impl Into<Bytes>, content_type: &str) {
        let mut st = self.state.lock().unwrap();
        st.expired.remove(&norm(path));
        st.files
            .insert(norm(path), (bytes.into(), content_type.to_string()));
    }

    /// Adds `bytes` at `path` and returns its URL.
    pub fn add_url(&self, path: &str, bytes: impl Into<Bytes>, content_type: &str) -> String {
        self.add(path, bytes, content_type);
        self.url(path)
    }

    /// Number of GET requests for `path` so far (faults, 404s and redirects included).
    pub fn hits(&self, path: &str) -> usize {
        *self
            .state
            .lock()
            .unwrap()
            .gets
            .get(&norm(path))
            .unwrap_or(&0)
    }

    /// GETs over all paths.
    pub fn total_hits(&self) -> usize {
        self.state.lock().unwrap().gets.values().sum()
    }

    /// Every request so far as (method, path-and-query), in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// From now on `path` answers 404, like Replicate an hour after the prediction.
    pub fn expire(&self, path: &str) {
        self.state.lock().unwrap().expired.insert(norm(path));
    }

    /// The next `n` requests for `path` answer `status`, then it behaves normally.
    pub fn fail_first(&self, path: &str, n: usize, status: u16) {
        self.state
            .lock()
            .unwrap()
            .fail_first
            .insert(norm(path), (n, status));
    }

    /// Waits `delay` before sending the response headers for `path`.
    pub fn slow(&self, path: &str, delay: Duration) {
        self.state.lock().unwrap().slow.insert(norm(path), delay);
    }

    /// Sends the full Content-Length for `path` but only `n_bytes` of the body,
    /// then breaks the connection.
    pub fn truncate(&self, path: &str, n_bytes: usize) {
        self.state
            .lock()
            .unwrap()
            .truncate
            .insert(norm(path), n_bytes);
    }

    /// Sends the headers and half the body of `path`, waits `pause`, then
    /// sends the rest: a download that is in flight for that long.
    pub fn pause_mid_body(&self, path: &str, pause: Duration) {
        self.state.lock().unwrap().pause.insert(norm(path), pause);
    }

    /// `path` answers `302 Found` with `Location: location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.state
            .lock()
            .unwrap()
            .redirect
            .insert(norm(path), location.to_string());
    }

    /// Removes every fault configured for `path` (not the expiry).
    /// Serves an expired `path` again.
    pub fn revive(&self, path: &str) {
        self.state.lock().unwrap().expired.remove(&norm(path));
    }

    pub fn clear_faults(&self, path: &str) {
        let p = norm(path);
        let mut st = self.state.lock().unwrap();
        st.fail_first.remove(&p);
        st.slow.remove(&p);
        st.truncate.remove(&p);
        st.pause.remove(&p);
        st.redirect.remove(&p);
    }
}

enum Plan {
    Status(u16, &'static str),
    Redirect(String),
    File(Bytes, String, Option<usize>, Option<Duration>),
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let is_head = req.method() == Method::HEAD;
    let (plan, delay) = {
        let mut st = state.lock().unwrap();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        st.requests.push((req.method().to_string(), pq));
        if req.method() == Method::GET {
            *st.gets.entry(path.clone()).or_insert(0) += 1;
        }
        let delay = st.slow.get(&path).copied();
        let failing = match st.fail_first.get_mut(&path) {
            Some((n, status)) if *n > 0 => {
                *n -= 1;
                Some(*status)
            }
            _ => None,
        };
        let plan = if let Some(status) = failing {
            Plan::Status(status, "injected failure\n")
        } else if st.expired.contains(&path) {
            Plan::Status(404, "not found\n")
        } else if let Some(loc) = st.redirect.get(&path) {
            Plan::Redirect(loc.clone())
        } else if let Some((bytes, ct)) = st.files.get(&path) {
            Plan::File(
                bytes.clone(),
                ct.clone(),
                st.truncate.get(&path).copied(),
                st.pause.get(&path).copied(),
            )
        } else {
            Plan::Status(404, "not found\n")
        };
        (plan, delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    // The request body is never needed; drop it after reading what arrived.
    let _ = req.into_body().collect().await;
    match plan {
        Plan::Status(status, text) => text_response(status, text),
        Plan::Redirect(loc) => Response::builder()
            .status(302)
            .header("location", loc)
            .body(full(Bytes::new()))
            .expect("response"),
        Plan::File(bytes, ct, truncate, pause) => {
            let mut b = Response::builder()
                .status(200)
                .header("content-length", bytes.len().to_string());
            if !ct.is_empty() {
                b = b.header("content-type", ct);
            }
            let body = match truncate {
                Some(n) if !is_head => {
                    let part = bytes.slice(..n.min(bytes.len()));
                    // Let the partial bytes reach the socket, then break the body.
                    let head = futures::stream::once(async move { Ok(Frame::data(part)) });
                    let tail = futures::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::other("truncated by test"))
                    });
                    BodyExt::boxed(StreamBody::new(head.chain(tail)))
                }
                None if pause.is_some() && !is_head => {
                    let pause = pause.unwrap_or_default();
                    let half = bytes.len() / 2;
                    let (first, rest) = (bytes.slice(..half), bytes.slice(half..));
                    let head = futures::stream::once(async move { Ok(Frame::data(first)) });
                    let tail = futures::stream::once(async move {
                        tokio::time::sleep(pause).await;
                        Ok(Frame::data(rest))
                    });
                    BodyExt::boxed(StreamBody::new(head.chain(tail)))
                }
                _ => full(bytes),
            };
            b.body(body).expect("response")
        }
    }
}

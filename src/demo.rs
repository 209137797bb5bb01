//! `permaproxy demo`: the whole flow on one machine without a Studio API.
//! It starts a stand-in Studio API and a stand-in Replicate file host on
//! loopback, points the proxy at them, then walks through a generate call,
//! the source expiring, and the hosted image still being served.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

/// A small real PNG (a gradient), so every client can display it.
pub fn sample_png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 160]);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(&raw);
    let idat = z.finish().unwrap_or_default();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    }
    png
}

/// The preferred port when it is free (so the printed URLs are the usual
/// ones), any free port otherwise.
fn port(preferred: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return preferred;
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(preferred, |a| a.port())
}

async fn serve<F>(addr: SocketAddr, handler: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync + Clone + 'static,
{
    let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

/// Starts the stand-ins and returns the settings that point the proxy at
/// them.
pub fn start_stand_ins() -> Result<Vec<(String, String)>, String> {
    let (studio, files, proxy, admin) = (port(3000), port(3001), port(8080), port(9090));
    let expired = Arc::new(AtomicBool::new(false));
    let png = Bytes::from(sample_png(320, 200));
    let image_url = format!("http://127.0.0.1:{files}/pbxt/demo/out-0.png");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let exp = expired.clone();
    rt.spawn(serve(([127, 0, 0, 1], files).into(), move |req| {
        if req.uri().path() == "/expire" {
            exp.store(true, Ordering::SeqCst);
            return response(200, "text/plain", "expired\n");
        }
        if exp.load(Ordering::SeqCst) || req.uri().path() != "/pbxt/demo/out-0.png" {
            return response(404, "text/plain", "Not found\n");
        }
        response(200, "image/png", png.clone())
    }));
    let url = image_url.clone();
    rt.spawn(serve(([127, 0, 0, 1], studio).into(), move |req| {
        if req.uri().path() == "/v1/images/generate" {
            let body = format!(
                r#"{{"id":"demo-prediction","status":"succeeded","images":[{{"url":"{url}"}}],"output":["{url}"]}}"#
            );
            // As a real Studio API would after authenticating the caller:
            // the trusted user id, in a header the proxy reads and removes.
            let mut r = response(200, "application/json", body);
            r.headers_mut().insert(
                USER_HEADER,
                hyper::header::HeaderValue::from_static(DEMO_USER),
            );
            return r;
        }
        response(200, "application/json", r#"{"service":"studio-api stand-in","ok":true}"#)
    }));
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    std::thread::spawn(move || walkthrough(proxy, admin, files));
    Ok(vec![
        ("UPSTREAM_URL".into(), format!("http://127.0.0.1:{studio}")),
        ("LISTEN_ADDR".into(), format!("127.0.0.1:{proxy}")),
        ("METRICS_ADDR".into(), format!("127.0.0.1:{admin}")),
        ("REPLICATE_HOSTS".into(), format!("127.0.0.1:{files}")),
        ("IMAGE_ALLOW_HTTP_SOURCES".into(), "true".into()),
        ("IMAGE_STORAGE_PATH".into(), "./data/demo".into()),
        (
            "PUBLIC_BASE_URL".into(),
            format!("http://127.0.0.1:{proxy}"),
        ),
        (
            "IMAGE_USER_ID_FROM".into(),
            format!("response-header:{USER_HEADER}"),
        ),
        ("LOG_FORMAT".into(), "pretty".into()),
        // Loopback only, and printed: the demo shows the admin page.
        ("ADMIN_TOKEN".into(), DEMO_ADMIN_TOKEN.into()),
    ])
}

const DEMO_ADMIN_TOKEN: &str = "demo-admin-token-for-this-machine-only";

/// Prints each step of the flow with what the client sees.
fn walkthrough(proxy: u16, admin: u16, files: u16) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{proxy}");
        for _ in 0..200 {
            if client.get(format!("http://127.0.0.1:{admin}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let log = std::env::current_dir()
            .map(|d| d.join(LOG_PATH))
            .unwrap_or_else(|_| LOG_PATH.into());
        println!("\n=== permaproxy demo ===\n   proxy log: {}  (tail -f it to watch)", log.display());
        println!("1. POST {base}/v1/images/generate  (Studio API answers with a Replicate-style URL, and names the signed-in user in {USER_HEADER})");
        let Ok(resp) = client
            .post(format!("{base}/v1/images/generate"))
            .body(r#"{"prompt":"a gradient"}"#)
            .send()
            .await
        else {
            println!("   the proxy did not answer");
            return;
        };
        let body = resp.text().await.unwrap_or_default();
        println!("   rewritten response: {body}");
        let hosted = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["images"][0]["url"].as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = client.get(format!("http://127.0.0.1:{files}/expire")).send().await;
        println!("2. the Replicate URL expires (it now answers 404)");
        match client.get(&hosted).send().await {
            Ok(r) => {
                println!("3. GET {hosted}\n   -> {} {}", r.status(), r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(""));
                for h in ["content-length", "etag", "cache-control"] {
                    println!("   {h}: {}", r.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("-"));
                }
            }
            Err(e) => println!("3. GET {hosted} failed: {e}"),
        }
        println!("4. try it yourself:\n   curl -s -X POST {base}/v1/images/generate\n   curl -sI {hosted}\n   curl -sI '{hosted}?w=128&format=webp'    (a 128 px WebP variant)\n   curl -s http://127.0.0.1:{admin}/metrics | grep permaproxy_\n   admin page: http://127.0.0.1:{admin}/admin/ui  (token: {DEMO_ADMIN_TOKEN})\n   (Ctrl-C stops the demo)\n");
    });
}

/// The response header the stand-in Studio API names its caller in.
const USER_HEADER: &str = "x-permaproxy-user";
const DEMO_USER: &str = "demo-user";
/// Where the proxy's own log lines go, so the terminal shows the story alone.
pub const LOG_PATH: &str = "data/demo.log";

/// Sends every log line to [`LOG_PATH`] (warnings and errors also to
/// stderr), emptied at each start.
pub fn init_logging(format: crate::config::LogFormat) -> Result<(), String> {
    let path = std::path::Path::new(LOG_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{LOG_PATH}: {e}"))?;
    crate::logging::init_to_file(format, file);
    Ok(())
}

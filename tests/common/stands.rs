//! The usual cast of an integration test: a stand-in Replicate file host, a
//! stand-in Studio API, and the real proxy between them.

use super::{client, fetch, FileHost, Proxy, ProxyOptions, Reply, StudioApi};

pub const GEN: &str = "/v1/images/generate";

/// The three parties of every test.
pub struct Stands {
    pub host: FileHost,
    pub api: StudioApi,
    pub proxy: Proxy,
}

/// File host + Studio API + a proxy rewriting the file host's http URLs,
/// with `extra` settings on top.
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let mut opts = ProxyOptions::for_stands(&api, &host);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    let proxy = Proxy::start(opts).await;
    Stands { host, api, proxy }
}

/// File host + Studio API + a proxy with `ADMIN_TOKEN` = `token` and `extra`
/// settings on top (an empty value removes a setting).
pub async fn admin_stands(token: &str, extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let mut opts = ProxyOptions::for_stands(&api, &host).env("ADMIN_TOKEN", token);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    opts.env.retain(|(_, v)| !v.is_empty());
    let proxy = Proxy::start(opts).await;
    Stands { host, api, proxy }
}

/// `POST /v1/images/generate` through the proxy with a JSON request body.
pub async fn generate(p: &Proxy, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client()
        .post(p.url(GEN))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

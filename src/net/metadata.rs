//! Plain-HTTP calls to link-local metadata endpoints (EC2 IMDS, the ECS
//! task metadata endpoint), for components that read them at start or on a
//! timer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value as Json;

/// GETs `url` and parses the answer as JSON; any status but 200 is an error.
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> Result<Json, String> {
    let (status, body) = fetch(http::Method::GET, url, headers).await?;
    if status != 200 {
        return Err(format!("{url}: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// One plain-HTTP request: its status and body (at most 1 MiB).
pub async fn fetch(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Vec<u8>), String> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    if body.len() > 1 << 20 {
        return Err(format!("{url}: answer over 1 MiB"));
    }
    Ok((status, body.to_vec()))
}

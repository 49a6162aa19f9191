//! Exporter `otlp` (also `otlp_grpc`): OTLP over gRPC.
//!
//! Requests are encoded straight from the batch (no copy of the structs) into
//! protobuf bytes and sent through tonic with a pass-through codec.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use serde::Deserialize;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::partial_success::OtlpResponse;
use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::settings::types::{
    duration, Compression, ExporterAuth, QueueConfig, RetryConfig, TlsClientConfig,
};
use crate::signal::{EncodedBatch, Metadata, Signal, Telemetry};

/// `exporters.otlp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http(s)://host:port`.
    pub endpoint: String,
    /// Extra gRPC metadata sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Deadline of one export request.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// TLS settings.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Queue settings.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// The extension that adds credentials (as gRPC metadata) to every
    /// request: `bearertokenauth` (`sigv4auth` signs bodies: use `otlphttp`).
    #[serde(default)]
    pub auth: Option<ExporterAuth>,
}

pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl OtlpExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.endpoint.trim().is_empty() {
            return Err(DeError::custom("endpoint must be set"));
        }
        for k in self.headers.keys() {
            MetadataKey::<tonic::metadata::Ascii>::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    DeError::custom(format!("headers: `{k}` is not a valid gRPC metadata key"))
                })?;
        }
        self.sending_queue.validate().map_err(DeError::custom)?;
        Ok(())
    }
}

/// The running exporter.
pub struct OtlpExporter {
    channel: Channel,
    compression: Option<CompressionEncoding>,
    metadata: MetadataMap,
    timeout: Duration,
    /// Adds credentials to every request.
    auth: Option<std::sync::Arc<dyn crate::component::ClientAuth>>,
}

impl OtlpExporter {
    /// Creates the (lazily connecting) channel.
    pub fn new(cfg: &OtlpExporterConfig, name: String) -> Result<Self, StartError> {
        let uri = crate::net::endpoint_uri(&cfg.endpoint, cfg.tls.insecure);
        let endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| StartError::component(&name, format!("invalid endpoint `{uri}`: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(cfg.timeout);
        let connector = crate::net::https_connector(&cfg.tls, true)
            .map_err(|e| StartError::component(&name, e.to_string()))?;
        let channel = endpoint.connect_with_connector_lazy(connector);
        let mut metadata = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| StartError::component(&name, format!("invalid header name `{k}`")))?;
            let value = MetadataValue::try_from(v.as_str()).map_err(|_| {
                StartError::component(&name, format!("invalid value for header `{k}`"))
            })?;
            metadata.insert(key, value);
        }
        Ok(OtlpExporter {
            channel,
            compression: match cfg.compression {
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::None => None,
            },
            metadata,
            timeout: cfg.timeout,
            auth: None,
        })
    }

    async fn call<R: prost::Message + Default + Send + Sync + 'static, B: RequestBody>(
        &self,
        path: &'static str,
        body: B,
        metadata: &Metadata,
    ) -> Result<R, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(16 * 1024 * 1024);
        if let Some(c) = self.compression {
            grpc = grpc.send_compressed(c);
        }
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let mut req = tonic::Request::new(body);
        *req.metadata_mut() = self.metadata.clone();
        if let Some(auth) = &self.auth {
            // The authenticator sees the request as HTTP; its headers become metadata.
            let (mut parts, ()) = http::Request::post(path)
                .body(())
                .map_err(|e| Status::internal(e.to_string()))?
                .into_parts();
            auth.authorize(&mut parts, &[], metadata)
                .await
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            for (k, v) in &parts.headers {
                let key = MetadataKey::from_bytes(k.as_str().as_bytes())
                    .map_err(|e| Status::internal(e.to_string()))?;
                let value = MetadataValue::try_from(v.as_bytes())
                    .map_err(|e| Status::internal(e.to_string()))?;
                req.metadata_mut().insert(key, value);
            }
        }
        req.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(req, path, RawCodec::<B, R>(PhantomData))
            .await
            .map(|r| r.into_inner())
    }
}

/// Something the pass-through codec can write as a gRPC request message.
pub trait RequestBody: Send + Sync + 'static {
    /// Writes the encoded message.
    fn write_to(self, dst: &mut EncodeBuf<'_>);
}

impl RequestBody for Bytes {
    fn write_to(self, dst: &mut EncodeBuf<'_>) {
        dst.put(self);
    }
}

/// A batch written as an OTLP export request straight into tonic's buffer.
pub struct BatchBody(pub Arc<Telemetry>);

impl RequestBody for BatchBody {
    fn write_to(self, dst: &mut EncodeBuf<'_>) {
        // The one-pass encoder patches length prefixes after the fact, which
        // tonic's append-only buffer cannot do: encode, then copy once.
        let bytes = crate::convert::otlp_proto::encode_batch(&self.0).bytes;
        dst.reserve(bytes.len());
        dst.put_slice(&bytes);
    }
}

/// Maps a gRPC status to retryable or permanent, as the OTLP spec lists them.
fn classify(status: Status) -> ExportError {
    let retry_after = crate::rpc::retry_delay(&status);
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    // A status the client built from a transport failure (e.g. `Internal:
    // h2 protocol error` when the target goes away mid-request) carries its
    // cause as a source; one the server sent never does. The server did not
    // answer that request, so it is retried whatever code tonic chose.
    if std::error::Error::source(&status).is_some() {
        return ExportError::Retryable {
            reason,
            retry_after,
        };
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            reason,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable {
            reason,
            retry_after,
        },
        _ => ExportError::Permanent(reason),
    }
}

impl OtlpExporter {
    /// Sends one request body for `signal` and reads its partial success.
    async fn send<B: RequestBody>(
        &self,
        signal: Signal,
        body: B,
        metadata: &Metadata,
    ) -> Result<ExportOk, ExportError> {
        match signal {
            Signal::Traces => {
                self.export_call::<ExportTraceServiceResponse, B>(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    body,
                    metadata,
                )
                .await
            }
            Signal::Metrics => {
                self.export_call::<ExportMetricsServiceResponse, B>(
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                    body,
                    metadata,
                )
                .await
            }
            Signal::Logs => {
                self.export_call::<ExportLogsServiceResponse, B>(
                    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                    body,
                    metadata,
                )
                .await
            }
        }
    }

    async fn export_call<R: OtlpResponse, B: RequestBody>(
        &self,
        path: &'static str,
        body: B,
        metadata: &Metadata,
    ) -> Result<ExportOk, ExportError> {
        let response: R = self.call(path, body, metadata).await.map_err(classify)?;
        Ok(response.into_export_ok())
    }
}

/// The `otlp` exporter's factory.
pub struct OtlpFactory;

impl Factory for OtlpFactory {
    type Config = OtlpExporterConfig;
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["otlp_grpc"]
    }
    fn validate(&self, config: &OtlpExporterConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for OtlpFactory {
    fn authenticators<'c>(&self, config: &'c OtlpExporterConfig) -> &'c [String] {
        config.auth.as_ref().map_or(&[], |a| &a.authenticator.0)
    }
    fn build(
        &self,
        config: &OtlpExporterConfig,
        ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        let mut exporter = OtlpExporter::new(config, ctx.name())?;
        let names = config.auth.as_ref().map_or(&[][..], |a| &a.authenticator.0);
        let auth = ctx
            .auth
            .chain(names)
            .map_err(|e| StartError::component(&ctx.name(), e))?;
        if let Some(auth) = auth {
            if auth.signs_body() {
                return Err(StartError::component(
                    &ctx.name(),
                    format!(
                        "authenticator `{}` signs request bodies, which gRPC frames itself; use otlphttp (the CloudWatch OTLP endpoints take only HTTP)",
                        names.join(", ")
                    ),
                ));
            }
            exporter.auth = Some(auth);
        }
        Ok(BuiltExporter::new(
            exporter,
            config.sending_queue.clone(),
            config.retry_on_failure.clone(),
        ))
    }
}

#[async_trait]
impl Export for OtlpExporter {
    type Progress = ();

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        metadata: &Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        self.send(data.signal(), BatchBody(data.clone()), metadata)
            .await
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    async fn export_encoded(
        &self,
        data: &EncodedBatch,
        metadata: &Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        self.send(data.signal, data.bytes.clone(), metadata).await
    }
}

/// A tonic codec that writes a [`RequestBody`] as it is and decodes the response with prost.
pub struct RawCodec<I, R>(pub PhantomData<(I, R)>);

impl<I: RequestBody, R: prost::Message + Default + Send + 'static> Codec for RawCodec<I, R> {
    type Encode = I;
    type Decode = R;
    type Encoder = RawEncoder<I>;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> RawEncoder<I> {
        RawEncoder(PhantomData)
    }

    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder(PhantomData)
    }
}

/// Writes a [`RequestBody`].
pub struct RawEncoder<I>(PhantomData<I>);

impl<I: RequestBody> Encoder for RawEncoder<I> {
    type Item = I;
    type Error = Status;

    fn encode(&mut self, item: I, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }
}

/// Decodes a prost message.
pub struct ProstDecoder<R>(PhantomData<R>);

impl<R: prost::Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("invalid response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    #[test]
    fn raw_request_encoding_matches_prost() {
        let rs = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let expected = ExportTraceServiceRequest {
            resource_spans: rs.clone(),
        }
        .encode_to_vec();
        assert_eq!(
            crate::convert::otlp_proto::encode_batch(&Telemetry::Traces(rs))
                .bytes
                .to_vec(),
            expected
        );
    }

    #[test]
    fn status_codes_are_classified() {
        assert!(matches!(
            classify(Status::unavailable("x")),
            ExportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(Status::invalid_argument("x")),
            ExportError::Permanent(_)
        ));
        assert!(matches!(
            classify(Status::resource_exhausted("x")),
            ExportError::Permanent(_)
        ));
        // Made by the client from a transport error: retryable, even as Internal/Unknown.
        let transport = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert!(matches!(classify(transport), ExportError::Retryable { .. }));
        let s = crate::rpc::unavailable("full", Duration::from_secs(2));
        match classify(s) {
            ExportError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
    }
}

//! OTLP/gRPC: the three collector services on one tonic server, each taking
//! requests as their bytes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::config::GrpcConfig;
use super::intake::{bytes_first, metadata_of, Intake, Rejection};
use crate::consumer::{BoxConsumer, StartError};
use crate::signal::{Metadata, Signal, Telemetry};

#[derive(Clone)]
struct Svc {
    /// The signal of its service.
    signal: Signal,
    intake: Intake,
    consumer: BoxConsumer,
    /// `include_metadata`.
    keep_metadata: bool,
}

impl Svc {
    /// The request's gRPC metadata, if kept.
    fn metadata<T>(&self, request: &Request<T>) -> Metadata {
        if self.keep_metadata {
            metadata_of(&request.metadata().clone().into_headers())
        } else {
            Metadata::default()
        }
    }

    async fn handle(
        &self,
        data: Telemetry,
        proto: Option<Bytes>,
        metadata: Metadata,
    ) -> Result<(), Status> {
        self.intake
            .deliver(&self.consumer, data, proto, metadata)
            .await
            .map_err(rejection_status)
    }
}

impl Svc {
    /// An export request as its bytes: passed on as they are when
    /// [`bytes_first`] says so, else decoded as before.
    async fn export_bytes<R: Default>(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<R>, Status> {
        let metadata = self.metadata(&request);
        let bytes = request.into_inner();
        let signal = self.signal;
        if let Some(data) = bytes_first(&self.consumer, signal, &bytes) {
            self.intake
                .deliver_encoded(&self.consumer, data, metadata)
                .await
                .map_err(rejection_status)?;
            return Ok(Response::new(R::default()));
        }
        // As tonic's prost codec answers a request that does not decode.
        let data = crate::convert::otlp_proto::decode_request(signal, &bytes)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.handle(data, Some(bytes), metadata).await?;
        Ok(Response::new(R::default()))
    }
}

fn rejection_status(r: Rejection) -> Status {
    match r {
        Rejection::Unavailable {
            reason,
            retry_after,
        } => crate::rpc::unavailable(&reason, retry_after),
        Rejection::Failed(reason) => Status::internal(reason),
    }
}

/// An OTLP export service (`R`: its response), taking each request as its
/// bytes (after gRPC decompression) rather than decoded: the generated
/// server's routing and limits, with [`RawCodec`] in place of prost's.
struct BytesServer<R> {
    svc: Arc<Svc>,
    max_decoding: usize,
    _response: PhantomData<fn() -> R>,
}

impl<R> Clone for BytesServer<R> {
    fn clone(&self) -> Self {
        BytesServer {
            svc: self.svc.clone(),
            max_decoding: self.max_decoding,
            _response: PhantomData,
        }
    }
}

impl tonic::server::NamedService for BytesServer<ExportTraceServiceResponse> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::NamedService for BytesServer<ExportMetricsServiceResponse> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl tonic::server::NamedService for BytesServer<ExportLogsServiceResponse> {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// The one method of each service.
fn export_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }
}

impl<R, B> tonic::codegen::Service<http::Request<B>> for BytesServer<R>
where
    R: Message + Default + Send + 'static,
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            if req.uri().path() != export_path(me.svc.signal) {
                return Ok(Status::unimplemented("").into_http());
            }
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(RawCodec::<R>(PhantomData))
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(me.max_decoding), None);
            Ok(grpc.unary(ExportBytes::<R>(me.svc, PhantomData), req).await)
        })
    }
}

/// One export call on a [`BytesServer`].
struct ExportBytes<R>(Arc<Svc>, PhantomData<fn() -> R>);

impl<R: Default + Send + 'static> tonic::server::UnaryService<Bytes> for ExportBytes<R> {
    type Response = R;
    type Future = tonic::codegen::BoxFuture<Response<R>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.export_bytes::<R>(request).await })
    }
}

/// Requests as their bytes, responses (`R`) encoded by prost.
struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R: Message + Send + 'static> tonic::codec::Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct ResponseEncoder<R>(PhantomData<fn() -> R>);

impl<R: Message> tonic::codec::Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// Binds and serves; services exist only for signals some pipeline takes
/// (others answer `UNIMPLEMENTED`). Responses are tiny, so they are never compressed.
pub(super) async fn start(
    cfg: &GrpcConfig,
    intake: Intake,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    let tls = crate::net::TlsAcceptor::optional(cfg.tls.as_ref(), &[b"h2"], "otlp grpc")?;
    let listener = crate::net::bind(&cfg.endpoint).await?;
    let limit = cfg.max_recv_msg_size_mib * 1024 * 1024;
    let svc = |signal: Signal| {
        intake.consumer(signal).map(|c| Svc {
            signal,
            intake: intake.clone(),
            consumer: c.clone(),
            keep_metadata: cfg.include_metadata,
        })
    };
    let auth = crate::net::bearer_auth(cfg.auth.as_ref(), "otlp grpc")?;
    let counter = intake.clone();
    // Checked on the headers, before a body is read or decoded.
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        match &auth {
            Some(a) if !a.check(req.metadata().get("authorization").map(|v| v.as_bytes())) => {
                counter.unauthenticated();
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
            _ => Ok(req),
        }
    };
    fn server<R>(s: Svc, max_decoding: usize) -> BytesServer<R> {
        BytesServer {
            svc: Arc::new(s),
            max_decoding,
            _response: PhantomData,
        }
    }
    let traces = svc(Signal::Traces).map(|s| {
        InterceptedService::new(
            server::<ExportTraceServiceResponse>(s, limit),
            check.clone(),
        )
    });
    let metrics = svc(Signal::Metrics).map(|s| {
        InterceptedService::new(
            server::<ExportMetricsServiceResponse>(s, limit),
            check.clone(),
        )
    });
    let logs = svc(Signal::Logs).map(|s| {
        InterceptedService::new(server::<ExportLogsServiceResponse>(s, limit), check.clone())
    });
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .add_optional_service(traces)
        .add_optional_service(metrics)
        .add_optional_service(logs);
    let endpoint = cfg.endpoint.clone();
    tracing::info!(endpoint = %endpoint, tls = tls.is_some(), "OTLP/gRPC receiver listening");
    Ok(tokio::spawn(async move {
        let served = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await
            }
            Some(tls) => {
                let incoming = tls.incoming(listener, cancel.clone());
                router
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(endpoint = %endpoint, error = %e, "OTLP/gRPC server stopped with an error");
        }
    }))
}

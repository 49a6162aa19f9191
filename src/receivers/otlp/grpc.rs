//! OTLP/gRPC: the three collector services on one tonic server.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
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
    /// A trace export request as its bytes: passed on as they are when
    /// [`bytes_first`] says so, else decoded as before.
    async fn export_traces(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = self.metadata(&request);
        let bytes = request.into_inner();
        if let Some(data) = bytes_first(&self.consumer, Signal::Traces, &bytes) {
            self.intake
                .deliver_encoded(&self.consumer, data, metadata)
                .await
                .map_err(rejection_status)?;
            return Ok(Response::new(ExportTraceServiceResponse::default()));
        }
        // As tonic's prost codec answers a request that does not decode.
        let request = ExportTraceServiceRequest::decode(bytes.clone())
            .map_err(|e| Status::internal(e.to_string()))?;
        self.handle(
            Telemetry::Traces(request.resource_spans),
            Some(bytes),
            metadata,
        )
        .await?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
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

/// The trace service's path.
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP trace service, taking each request as its bytes (after gRPC
/// decompression) rather than decoded: the generated server's routing and
/// limits, with [`RawCodec`] in place of prost's.
#[derive(Clone)]
struct TraceBytesServer {
    svc: Arc<Svc>,
    max_decoding: usize,
}

impl tonic::server::NamedService for TraceBytesServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tonic::codegen::Service<http::Request<B>> for TraceBytesServer
where
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
            if req.uri().path() != TRACE_EXPORT {
                return Ok(Status::unimplemented("").into_http());
            }
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(me.max_decoding), None);
            Ok(grpc.unary(ExportBytes(me.svc), req).await)
        })
    }
}

/// One export call on [`TraceBytesServer`].
struct ExportBytes(Arc<Svc>);

impl tonic::server::UnaryService<Bytes> for ExportBytes {
    type Response = ExportTraceServiceResponse;
    type Future = tonic::codegen::BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.export_traces(request).await })
    }
}

/// Requests as their bytes, responses encoded by prost.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct ResponseEncoder;

impl tonic::codec::Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
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

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let metadata = self.metadata(&request);
        self.handle(
            Telemetry::Metrics(request.into_inner().resource_metrics),
            None,
            metadata,
        )
        .await?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let metadata = self.metadata(&request);
        self.handle(
            Telemetry::Logs(request.into_inner().resource_logs),
            None,
            metadata,
        )
        .await?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
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
    let traces = svc(Signal::Traces).map(|s| {
        InterceptedService::new(
            TraceBytesServer {
                svc: Arc::new(s),
                max_decoding: limit,
            },
            check.clone(),
        )
    });
    let metrics = svc(Signal::Metrics).map(|s| {
        InterceptedService::new(
            MetricsServiceServer::new(s)
                .max_decoding_message_size(limit)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
            check.clone(),
        )
    });
    let logs = svc(Signal::Logs).map(|s| {
        InterceptedService::new(
            LogsServiceServer::new(s)
                .max_decoding_message_size(limit)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
            check.clone(),
        )
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

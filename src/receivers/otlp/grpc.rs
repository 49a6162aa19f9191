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
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::config::GrpcConfig;
use super::intake::{metadata_of, Intake, Rejection};
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

    async fn handle(&self, data: Telemetry, metadata: Metadata) -> Result<(), Status> {
        self.intake
            .deliver(&self.consumer, data, metadata)
            .await
            .map_err(|r| match r {
                Rejection::Unavailable {
                    reason,
                    retry_after,
                } => crate::rpc::unavailable(&reason, retry_after),
                Rejection::Failed(reason) => Status::internal(reason),
            })
    }
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = self.metadata(&request);
        self.handle(
            Telemetry::Traces(request.into_inner().resource_spans),
            metadata,
        )
        .await?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
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
            TraceServiceServer::new(s)
                .max_decoding_message_size(limit)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
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

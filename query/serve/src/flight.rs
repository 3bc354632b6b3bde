//! Arrow Flight SQL (`familiar serve --flight-sql ADDR`, the `flight-sql` feature): the read-only
//! SQL session of `POST /v1/sql` for Flight SQL clients — ADBC (`adbc_driver_flightsql` in
//! Python), the Arrow Flight SQL JDBC driver, `arrow_flight::sql::client` — on a port of its own
//! (gRPC over HTTP/2).
//!
//! What a client can do: run a statement (`CommandStatementQuery`: `GetFlightInfo`, then `DoGet`
//! with the ticket), and ask what is there: `GetSqlInfo` (server name, version, read-only),
//! `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas when asked) and `GetTableTypes`. The
//! statement runs under the same policy and limits as over HTTP: no writes or DDL touching files
//! (`PERMISSION_DENIED`), the server's time limit (`DEADLINE_EXCEEDED`), its concurrency and queue
//! (`UNAVAILABLE` when full), `--sql-rows` rows at most (the `FlightInfo`'s `app_metadata` then
//! says `{"truncated":true}`). Updates, ingestion, prepared statements, transactions and Substrait
//! plans are answered `UNIMPLEMENTED`, in words.
//!
//! A statement runs when its `FlightInfo` is asked for (the schema and the row count come from
//! the result); its rows wait for the one `DoGet` that fetches them — at most [`MAX_PENDING`]
//! results, each for at most [`PENDING_FOR`], the oldest dropped first.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use arrow_schema::{Schema, SchemaRef};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{ApiError, App};

/// Results run but not yet fetched, at most.
pub const MAX_PENDING: usize = 64;
/// How long a result waits for its `DoGet`.
pub const PENDING_FOR: Duration = Duration::from_secs(300);

/// The catalog and schema every table is in (DataFusion's defaults, which familiar's SQL session
/// keeps).
const CATALOG: &str = "datafusion";
const DB_SCHEMA: &str = "public";

/// Why writes are refused.
const READ_ONLY: &str = "this server is read-only: no updates, ingestion or transactions (run a \
                         SELECT)";

/// A statement's result waiting for its `DoGet`.
struct Pending {
    handle: u64,
    made: Instant,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

/// The Flight SQL service over an [`App`]'s SQL session.
pub struct FlightSql {
    app: Arc<App>,
    pending: Mutex<VecDeque<Pending>>,
    next_handle: std::sync::atomic::AtomicU64,
    info: SqlInfoData,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.pending.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("FlightSql")
            .field("pending", &pending)
            .finish_non_exhaustive()
    }
}

impl FlightSql {
    /// The service for `app` (its SQL session, limits and concurrency).
    pub fn new(app: Arc<App>) -> Result<FlightSql, ApiError> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "familiar");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            i32::try_from(app.limits.time_limit.as_millis()).unwrap_or(i32::MAX),
        );
        let info = b
            .build()
            .map_err(|e| ApiError::internal(format!("Flight SQL server information: {e}")))?;
        // Handles start at a number of the clock, so that a client that kept one from a
        // previous run of the server does not fetch another's result.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Ok(FlightSql {
            app,
            pending: Mutex::new(VecDeque::new()),
            next_handle: std::sync::atomic::AtomicU64::new(start),
            info,
        })
    }

    fn keep(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> u64 {
        let handle = self
            .next_handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|p| p.made.elapsed() < PENDING_FOR);
        while pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        pending.push_back(Pending {
            handle,
            made: Instant::now(),
            schema,
            batches,
        });
        handle
    }

    fn take(&self, handle: u64) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|p| p.made.elapsed() < PENDING_FOR);
        let at = pending.iter().position(|p| p.handle == handle)?;
        pending.remove(at)
    }

    /// The tables of the session, as `GetTables` lists them.
    fn tables(&self) -> Vec<(String, SchemaRef)> {
        self.app
            .sql
            .tables()
            .iter()
            .map(|t| (t.name.clone(), Arc::clone(&t.schema)))
            .collect()
    }
}

/// A gRPC status for an HTTP-style error.
fn status(e: ApiError) -> Status {
    let message = e.message;
    match e.kind {
        "refused" => Status::permission_denied(message),
        "timeout" => Status::deadline_exceeded(message),
        "server-overloaded" => Status::unavailable(message),
        "not-found" => Status::not_found(message),
        _ if e.status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Status::resource_exhausted(message)
        }
        _ if e.status.is_client_error() => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight data of one batch-producing answer.
fn stream_of(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DataStream> {
    let batches = futures::stream::iter(batches.into_iter().map(Ok));
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A `FlightInfo` whose one endpoint's ticket is `command` itself (the metadata requests: their
/// rows are made when fetched).
fn info_for(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn batch_or_status<E: std::fmt::Display>(b: Result<RecordBatch, E>) -> Result<RecordBatch, Status> {
    b.map_err(|e| Status::internal(format!("building metadata rows: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(Status::unimplemented(
                "transactions: this server is read-only and has none",
            ));
        }
        let sql = Arc::clone(&self.app.sql);
        let text = query.query;
        let mut results = self
            .app
            .run(move || sql.run(&text).map_err(crate::sql::sql_error))
            .await
            .map_err(status)?;
        let Some(last) = results.pop() else {
            return Err(Status::invalid_argument("no statement to run"));
        };
        let rows: usize = last.rows();
        let bytes: usize = last.batches.iter().map(|b| b.get_array_memory_size()).sum();
        let truncated = last.truncated;
        let schema = Arc::clone(&last.schema);
        let handle = self.keep(Arc::clone(&last.schema), last.batches);
        let ticket = TicketStatementQuery {
            statement_handle: handle.to_le_bytes().to_vec().into(),
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("encoding the result's schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(request.into_inner())
            .with_total_records(rows as i64)
            .with_total_bytes(bytes as i64)
            .with_ordered(true);
        if truncated {
            info = info.with_app_metadata(r#"{"truncated":true}"#.as_bytes().to_vec());
        }
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle: [u8; 8] = ticket.statement_handle.as_ref().try_into().map_err(|_| {
            Status::invalid_argument(format!(
                "a statement handle is 8 bytes, not {}",
                ticket.statement_handle.len()
            ))
        })?;
        let p = self.take(u64::from_le_bytes(handle)).ok_or_else(|| {
            Status::not_found(format!(
                "no result waits for this ticket: each is fetched once, within {} s (run the \
                 statement again)",
                PENDING_FOR.as_secs()
            ))
        })?;
        Ok(stream_of(p.schema, p.batches))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&self.info);
        let schema = builder.schema();
        let batch = batch_or_status(builder.build())?;
        Ok(stream_of(schema, vec![batch]))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        let batch = batch_or_status(builder.build())?;
        Ok(stream_of(schema, vec![batch]))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, DB_SCHEMA);
        let schema = builder.schema();
        let batch = batch_or_status(builder.build())?;
        Ok(stream_of(schema, vec![batch]))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for (name, schema) in self.tables() {
            builder
                .append(CATALOG, DB_SCHEMA, &name, "TABLE", &schema)
                .map_err(|e| Status::internal(format!("table {name}: {e}")))?;
        }
        let schema = builder.schema();
        let batch = batch_or_status(builder.build())?;
        Ok(stream_of(schema, vec![batch]))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        let schema = builder.schema();
        let batch = batch_or_status(builder.build())?;
        Ok(stream_of(schema, vec![batch]))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::unimplemented(READ_ONLY))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::unimplemented(READ_ONLY))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(Status::unimplemented(READ_ONLY))
    }

    async fn do_action_create_prepared_statement(
        &self,
        _query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(Status::unimplemented(
            "prepared statements are not offered: run the statement itself (parameters written \
             into it)",
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL for `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = FlightSql::new(app).map_err(|e| std::io::Error::other(e.message))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| std::io::Error::other(format!("Flight SQL: {e}")))
}

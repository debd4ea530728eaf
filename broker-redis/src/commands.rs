//! A request/response connection to Redis shared by a component's tasks: made when
//! first needed, every command bounded by the timeout, made again after a failure.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures_util::future::FutureExt;
use ws_driver::adapter::{BoxFuture, Runtime};

use crate::RedisConfig;

pub(crate) type Sleep = Arc<dyn Fn(Instant) -> BoxFuture<()> + Send + Sync>;

/// A multiplexed connection (commands from several tasks share it, pipelined by
/// redis-rs), and the timeout every command runs under.
pub(crate) struct Commands {
    pub(crate) config: RedisConfig,
    pub(crate) sleep: Sleep,
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Commands {
    pub(crate) fn new<R: Runtime>(config: RedisConfig, runtime: R) -> Self {
        Self {
            config,
            sleep: Arc::new(move |deadline| runtime.sleep_until(deadline)),
            connection: Mutex::new(None),
        }
    }

    /// `future` within the command timeout; after a failure the next command connects
    /// again (the connection may be broken).
    pub(crate) async fn timed<T>(
        &self,
        future: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let deadline = (self.sleep)(Instant::now() + self.config.command_timeout).fuse();
        let future = future.fuse();
        futures_util::pin_mut!(future, deadline);
        let result = futures_util::select_biased! {
            result = future => result.map_err(|err| err.to_string()),
            () = deadline => Err("Redis command timed out".to_owned()),
        };
        if result.is_err() {
            *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        result
    }

    /// The shared connection, made if there is none.
    pub(crate) async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        if let Some(connection) = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(connection);
        }
        let connection = self
            .timed(self.config.client.get_multiplexed_async_connection())
            .await?;
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }
}

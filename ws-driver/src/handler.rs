//! Handlers and middleware.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::Context;
use crate::error::HandlerError;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What handlers and middleware return: `Err` becomes a `sys.error` to the client.
pub type HandlerResult = Result<(), HandlerError>;

/// Handles one application event. Implemented for every
/// `Fn(Context) -> impl Future<Output = HandlerResult>`.
pub trait Handler: Send + Sync + 'static {
    /// Handles the event of `ctx`.
    fn call(&self, ctx: Context) -> BoxFuture<HandlerResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, ctx: Context) -> BoxFuture<HandlerResult> {
        Box::pin(self(ctx))
    }
}

/// Runs before the handler, in the order added; may stop the message by returning
/// without calling [`Next::run`] (or by returning an error, which the client sees).
/// Implemented for every `Fn(Context, Next) -> impl Future<Output = HandlerResult>`.
pub trait Middleware: Send + Sync + 'static {
    /// Handles `ctx`, calling `next.run(ctx)` to continue the chain.
    fn handle(&self, ctx: Context, next: Next) -> BoxFuture<HandlerResult>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Context, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, ctx: Context, next: Next) -> BoxFuture<HandlerResult> {
        Box::pin(self(ctx, next))
    }
}

/// The rest of a middleware chain.
pub struct Next {
    chain: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    handler: Arc<dyn Handler>,
}

impl Next {
    pub(crate) fn new(chain: Arc<[Arc<dyn Middleware>]>, handler: Arc<dyn Handler>) -> Self {
        Self {
            chain,
            index: 0,
            handler,
        }
    }

    /// Runs the next middleware, or the handler when none is left.
    pub fn run(self, ctx: Context) -> BoxFuture<HandlerResult> {
        match self.chain.get(self.index).cloned() {
            Some(middleware) => {
                let next = Next {
                    chain: self.chain,
                    index: self.index + 1,
                    handler: self.handler,
                };
                middleware.handle(ctx, next)
            }
            None => self.handler.call(ctx),
        }
    }
}

//! Pluggable authentication.

use std::future::Future;
use std::sync::Arc;

use ws_session::ConnectionInfo;

use crate::handler::BoxFuture;
use crate::state::Identity;

/// What an authentication resolves to: who the credential belongs to, or a reason the
/// client sees.
pub type AuthFuture = BoxFuture<Result<Identity, String>>;

/// Decides who a credential belongs to. Runs when a connection brings a credential
/// (`Authorization: Bearer`, `?token=`, or a `sys.auth` message) and again on every
/// resume, so a revoked credential cannot resume a session.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `token` presented on the connection described by `info`.
    fn authenticate(&self, token: String, info: Arc<ConnectionInfo>) -> AuthFuture;
}

/// An [`Authenticator`] from a closure: `FnAuthenticator::new(|token, info| async move { … })`
/// resolving to `Ok(user_id)` (a `String`) or `Ok(Identity)`, or `Err(reason)`.
pub struct FnAuthenticator<F>(F);

impl<F> FnAuthenticator<F> {
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F, Fut, I> Authenticator for FnAuthenticator<F>
where
    F: Fn(String, Arc<ConnectionInfo>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, String>> + Send + 'static,
    I: Into<Identity> + 'static,
{
    fn authenticate(&self, token: String, info: Arc<ConnectionInfo>) -> AuthFuture {
        let answer = (self.0)(token, info);
        Box::pin(async move { answer.await.map(Into::into) })
    }
}

/// The authenticator when none is configured: refuses every credential.
pub(crate) struct RefuseAll;

impl Authenticator for RefuseAll {
    fn authenticate(&self, _token: String, _info: Arc<ConnectionInfo>) -> AuthFuture {
        Box::pin(async { Err("no authenticator is configured".to_owned()) })
    }
}

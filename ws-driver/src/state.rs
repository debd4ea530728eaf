//! What an application keeps besides its handlers: state shared by all of them
//! ([`App::with_state`](crate::App::with_state)), and per session the identity the
//! authenticator vouched for and the data handlers and middleware attach.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// One value per type, shared.
#[derive(Clone, Default)]
pub(crate) struct TypeMap(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl TypeMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref())
    }

    fn get_arc<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.0
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|v| v.downcast().ok())
    }

    fn remove<T: Send + Sync + 'static>(&mut self) -> Option<Arc<T>> {
        self.0.remove(&TypeId::of::<T>()).and_then(|v| v.downcast().ok())
    }
}

/// Who a credential belongs to, as an [`Authenticator`](crate::Authenticator) answers:
/// the user id, and optionally typed claims (roles, tenant, token expiry…) that stay
/// with the session ([`Context::claims`](crate::Context::claims)) and are replaced by
/// the authenticator's new answer on every resume.
///
/// A plain `String` or `&str` converts into an identity without claims, so
/// `Ok(user_id)` is enough for an authenticator that has nothing more to say.
#[derive(Clone)]
pub struct Identity {
    pub(crate) user: String,
    pub(crate) claims: Option<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    /// The user `user`, without claims.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            claims: None,
        }
    }

    /// Attaches `claims`, read back with [`Context::claims::<C>()`](crate::Context::claims).
    pub fn with_claims<C: Send + Sync + 'static>(mut self, claims: C) -> Self {
        self.claims = Some(Arc::new(claims));
        self
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("claims", &self.claims.is_some())
            .finish()
    }
}

impl From<String> for Identity {
    fn from(user: String) -> Self {
        Self::new(user)
    }
}

impl From<&str> for Identity {
    fn from(user: &str) -> Self {
        Self::new(user)
    }
}

/// What the driver keeps for one session, shared by its handlers' contexts: the
/// claims of its latest authentication and its typed data. Lives as long as the
/// session (suspended sessions keep theirs: a resume finds it again).
#[derive(Default)]
pub(crate) struct SessionState {
    claims: RwLock<Option<Arc<dyn Any + Send + Sync>>>,
    data: Mutex<TypeMap>,
}

// A panic while a lock was held leaves plain data behind, still usable.
impl SessionState {
    pub(crate) fn set_claims(&self, claims: Option<Arc<dyn Any + Send + Sync>>) {
        *self.claims.write().unwrap_or_else(PoisonError::into_inner) = claims;
    }

    pub(crate) fn claims<C: Send + Sync + 'static>(&self) -> Option<Arc<C>> {
        let claims = self.claims.read().unwrap_or_else(PoisonError::into_inner).clone();
        claims.and_then(|c| c.downcast().ok())
    }

    pub(crate) fn data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner).get_arc()
    }

    pub(crate) fn set_data<T: Send + Sync + 'static>(&self, value: T) {
        self.data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(value);
    }

    pub(crate) fn remove_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner).remove()
    }
}

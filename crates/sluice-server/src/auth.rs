//! Who may connect: `[server.users]` checked with SCRAM-SHA-256 on the Postgres port, or
//! anyone on loopback when no users are configured.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sha2::{Digest, Sha256};

use pgwire::api::METADATA_USER;

/// `[server.users]` with their SCRAM salted passwords, computed once at start.
#[derive(Debug)]
pub struct Users {
    salted: HashMap<String, (Vec<u8>, Vec<u8>)>,
}

impl Users {
    pub fn new(passwords: Vec<(String, String)>) -> Users {
        let salted = passwords
            .into_iter()
            .map(|(user, password)| {
                let seed = format!("{user}:{:?}:{}", Instant::now(), std::process::id());
                let salt = Sha256::digest(seed.as_bytes())[..16].to_vec();
                let salted = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
                (user, (salt, salted))
            })
            .collect();
        Users { salted }
    }

    pub fn is_empty(&self) -> bool {
        self.salted.is_empty()
    }

    /// `password` is `user`'s (HTTP basic auth, against the same salted passwords).
    pub fn check(&self, user: &str, password: &str) -> bool {
        match self.salted.get(user) {
            Some((salt, salted)) => {
                let given = gen_salted_password(password, salt, SCRAM_ITERATIONS);
                // Same length always; compare every byte so timing says nothing.
                given.len() == salted.len()
                    && given
                        .iter()
                        .zip(salted)
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            None => false,
        }
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.salted.get(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_string(),
                "28P01".to_string(),
                format!("password authentication failed for user \"{user}\""),
            )))),
        }
    }
}

/// No users configured: anyone on loopback may connect.
pub struct Open {
    pub(super) connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// One connection's startup: SCRAM keeps per-connection state, so each gets its own.
pub enum Startup {
    Open(Open),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            // pgwire leaves the user out of this message; psql users expect Postgres's words.
            Startup::Scram(h) => h.on_startup(client, message).await.map_err(|e| match e {
                PgWireError::InvalidPassword(_) => {
                    PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_string(),
                        "28P01".to_string(),
                        format!(
                            "password authentication failed for user \"{}\"",
                            user_of(client)
                        ),
                    )))
                }
                other => other,
            }),
        }
    }
}

/// The user a connection logged in as (`-` before the startup message names one).
pub(super) fn user_of<C: ClientInfo>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_else(|| "-".into())
}

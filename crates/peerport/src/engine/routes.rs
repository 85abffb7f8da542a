//! A session's routes: what the receiver asked for in its hello, granted
//! against the sender's current [`Catalog`]. Every TCP stream and UDP flow
//! is checked again when it starts (the catalog may have been reloaded)
//! and holds a [`Permit`] that tells it when a reload no longer allows it,
//! so a reload closes exactly the connections it disallows;
//! [`Routes::nothing_allowed`] ends a session none of whose wants is
//! allowed any more.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::watch;

use super::{
    policy::{Catalog, Refusal, Route, MAX_WANTS},
    tally::{Ledger, ServiceCounts},
};
use crate::{
    addr::Protocol,
    proto::header::{Request, Status, Want, Wanted},
};

/// The sender's catalog as it is now and after every reload.
pub type CatalogWatch = watch::Receiver<Arc<Catalog>>;

/// What one session may reach.
#[derive(Debug, Clone)]
pub struct Routes {
    wants: Vec<Want>,
    /// The hello listed no wants (a receiver with one default `--target`,
    /// or an older one): one route, the default service, and UDP flow ids
    /// carry no index.
    legacy: bool,
    peer: String,
    catalog: CatalogWatch,
    /// Each want's counts, looked up once per session (not per stream).
    counts: Vec<Arc<ServiceCounts>>,
    /// The wants not allowed when the hello came, with why.
    refused: Vec<(u16, String)>,
}

impl Routes {
    /// Check every want of a hello against the catalog now.
    pub fn from_hello(
        req: &Request,
        peer: &str,
        catalog: CatalogWatch,
        ledger: Arc<Ledger>,
    ) -> Result<Self, Refusal> {
        let legacy = req.wants.is_empty();
        let wants = if legacy {
            vec![Want {
                protocol: req.protocol.unwrap_or(Protocol::Tcp),
                what: Wanted::Service(String::new()),
            }]
        } else {
            req.wants.clone()
        };
        if wants.len() > MAX_WANTS {
            return Err(Refusal {
                status: Status::BadRequest,
                message: format!(
                    "the receiver asks for {} services or destinations; a session carries at most {MAX_WANTS}",
                    wants.len()
                ),
            });
        }
        let mut routes = Routes {
            wants,
            legacy,
            peer: peer.to_string(),
            catalog,
            counts: Vec::new(),
            refused: Vec::new(),
        };
        // what is allowed now is granted (a reconnecting receiver keeps
        // what a reload still allows); a hello with nothing allowed is refused
        let now = routes.catalog.borrow().clone();
        let mut refused = routes.refusals(&now);
        if refused.len() == routes.wants.len() && !refused.is_empty() {
            return Err(refused.swap_remove(0).1);
        }
        for (i, r) in &refused {
            tracing::warn!(peer, want = %routes.wants[*i], "not allowed (the session carries the others): {}", r.message);
        }
        routes.refused = refused
            .into_iter()
            .map(|(i, r)| (i as u16, r.message))
            .collect();
        routes.counts = routes
            .wants
            .iter()
            .map(|w| ledger.service(&w.short()))
            .collect();
        Ok(routes)
    }

    /// The wants not allowed when the hello came (their index, and why):
    /// the reply tells the receiver.
    pub fn refused(&self) -> &[(u16, String)] {
        &self.refused
    }

    /// Whether the hello listed no wants.
    pub fn legacy(&self) -> bool {
        self.legacy
    }

    /// How many wants the hello listed.
    pub fn len(&self) -> usize {
        self.wants.len()
    }

    /// Whether there are none (never, once built).
    pub fn is_empty(&self) -> bool {
        self.wants.is_empty()
    }

    /// Whether any want is for `protocol`.
    pub fn carries(&self, protocol: Protocol) -> bool {
        self.wants.iter().any(|w| w.protocol == protocol)
    }

    /// The want a UDP flow id belongs to (its high byte).
    pub fn index_of_flow(&self, flow: u32) -> usize {
        if self.legacy {
            0
        } else {
            (flow >> 24) as usize
        }
    }

    /// The counts of want `index`'s service or destination.
    pub fn counts(&self, index: usize) -> Option<Arc<ServiceCounts>> {
        self.counts.get(index).cloned()
    }

    /// The catalog in force now (a reload replaces it).
    pub fn catalog_now(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// What the session's wants are, for logs.
    pub fn summary(&self) -> String {
        let all: Vec<String> = self.wants.iter().map(|w| w.to_string()).collect();
        all.join(", ")
    }

    /// The wants `catalog` does not allow (their index), each with its
    /// refusal.
    fn refusals(&self, catalog: &Catalog) -> Vec<(usize, Refusal)> {
        self.wants
            .iter()
            .enumerate()
            .filter_map(|(i, w)| catalog.grant(w, &self.peer).err().map(|r| (i, r)))
            .collect()
    }

    /// What a stream or flow of want `index` (to `dest`, for a SOCKS5
    /// connection) holds while it runs: it tells when a reload no longer
    /// allows it.
    pub fn permit(&self, index: usize, dest: Option<&(String, u16)>) -> Permit {
        let want = self
            .wants
            .get(index)
            .cloned()
            .map(|w| match (&w.what, dest) {
                (Wanted::Dynamic, Some((host, port))) => Want {
                    protocol: w.protocol,
                    what: Wanted::Destination {
                        host: host.clone(),
                        port: *port,
                    },
                },
                _ => w,
            });
        Permit {
            want,
            peer: self.peer.clone(),
            catalog: self.catalog.clone(),
        }
    }

    /// Where want `index` goes now, and the addresses to connect to (for
    /// a destination, every one allowed).
    pub async fn resolve(
        &self,
        index: usize,
        protocol: Protocol,
        dest: Option<&(String, u16)>,
    ) -> Result<(Route, Vec<SocketAddr>), Refusal> {
        let want = self
            .wants
            .get(index)
            .filter(|w| w.protocol == protocol)
            .ok_or_else(|| Refusal {
                status: Status::BadRequest,
                message: format!("no {protocol} service number {index} in this session's hello"),
            })?;
        let named;
        let want = match (&want.what, dest) {
            // a SOCKS5 connection: its destination, under the same rules
            (Wanted::Dynamic, Some((host, port))) => {
                named = Want {
                    protocol,
                    what: Wanted::Destination {
                        host: host.clone(),
                        port: *port,
                    },
                };
                &named
            }
            _ => want,
        };
        let catalog = self.catalog_now();
        let route = catalog.grant(want, &self.peer)?;
        let addrs = catalog.resolve(&route).await?;
        Ok((route, addrs))
    }

    /// Resolves when a reloaded catalog allows none of the wants (with the
    /// first refusal); pending forever otherwise. A reload that disallows
    /// some of them is logged here; their connections close by their
    /// [`Permit`]s.
    pub async fn nothing_allowed(&self) -> Refusal {
        let mut rx = self.catalog.clone();
        loop {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = rx.borrow_and_update().clone();
            let mut refused = self.refusals(&now);
            if refused.len() == self.wants.len() && !refused.is_empty() {
                return refused.swap_remove(0).1;
            }
            if refused.is_empty() {
                tracing::info!("configuration reloaded: this session's services are still allowed");
            }
            for (i, r) in refused {
                tracing::warn!(want = %self.wants[i], "configuration reloaded: no longer allowed, its connections close (the session carries the others): {}", r.message);
            }
        }
    }
}

/// A running stream's or flow's right to go on: its want, checked again
/// after every reload.
#[derive(Debug)]
pub struct Permit {
    want: Option<Want>,
    peer: String,
    catalog: CatalogWatch,
}

impl Permit {
    /// Resolves when a reloaded catalog no longer allows this want (with
    /// the refusal); pending forever otherwise.
    pub async fn revoked(mut self) -> Refusal {
        let Some(want) = self.want else {
            return std::future::pending().await;
        };
        loop {
            if self.catalog.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = self.catalog.borrow_and_update().clone();
            if let Err(r) = now.grant(&want, &self.peer) {
                return r;
            }
        }
    }
}

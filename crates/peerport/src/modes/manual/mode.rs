//! The copy-paste modes behind the [`Mode`] seam: one implementation for
//! every [`ManualPath`] (`iroh-manual`, `ice`), the blobs going through
//! files when given and through the [`ModeContext`]'s console otherwise.

use std::{path::PathBuf, sync::Arc};

use super::{BlobSink, BlobSource, ManualAcceptor, ManualDialer, ManualPath, MAX_BLOB_AGE};
use crate::{
    engine::Authorizer,
    modes::{Accepting, Announce, Awaiting, Dialing, Mode, ModeContext, ModeError},
};

/// Settings of a copy-paste mode: the path and where its blobs go.
#[derive(Debug, Clone)]
pub struct ManualMode<P> {
    /// How the two sides connect once they have each other's blob.
    pub path: P,
    /// Where offers are written (receiver) and read (sender); `None`: the console.
    pub offer_file: Option<PathBuf>,
    /// Where answers are written (sender) and read (receiver); `None`: the console.
    pub answer_file: Option<PathBuf>,
}

impl<P: ManualPath + Clone> ManualMode<P> {
    /// A copy-paste mode over `path` with its blobs on the console.
    pub fn new(path: P) -> Self {
        ManualMode {
            path,
            offer_file: None,
            answer_file: None,
        }
    }
}

impl<P: ManualPath + Clone> Mode for ManualMode<P> {
    const NAME: peerport_signaling::Mode = P::MODE;
    type Acceptor = ManualAcceptor<P::Conn>;
    type Dialer = ManualDialer<P>;

    async fn acceptor(&self, cx: &ModeContext) -> Result<Accepting<Self::Acceptor>, ModeError> {
        let acceptor = ManualAcceptor::start(
            Arc::new(self.path.clone()),
            BlobSource::from_arg(self.offer_file.as_ref(), &cx.console),
            BlobSink::from_arg(self.answer_file.as_ref(), &cx.console),
        );
        Ok(Accepting {
            input_closed: Some(acceptor.input_closed_flag()),
            acceptor,
            // the blobs pin each side's key: the transport authenticates
            auth: Authorizer::transport_pinned(),
            announce: Announce::default(),
            metrics: self.path.metrics(),
        })
    }

    async fn dialer(&self, cx: &ModeContext) -> Result<Dialing<Self::Dialer>, ModeError> {
        Ok(Dialing {
            metrics: self.path.metrics(),
            dialer: ManualDialer::new(
                self.path.clone(),
                BlobSink::from_arg(self.offer_file.as_ref(), &cx.console),
                BlobSource::from_arg(self.answer_file.as_ref(), &cx.console),
                MAX_BLOB_AGE,
                cx.rejoin_limit(),
            ),
        })
    }

    fn awaiting(&self) -> Awaiting {
        match &self.answer_file {
            Some(f) => Awaiting::AnswerFile(f.clone()),
            None => Awaiting::Paste,
        }
    }
}

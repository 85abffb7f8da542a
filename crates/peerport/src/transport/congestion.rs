//! `--congestion bbr`: [`bbr::Model`](super::bbr::Model) behind quinn's
//! and noq's congestion-controller interfaces.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

use super::bbr::Model;

/// The controller methods both stacks' interfaces share, delegated to the
/// model (`$controller`: the stack's trait, for `clone_box`).
macro_rules! model_delegation {
    ($controller:ident) => {
        fn on_mtu_update(&mut self, new_mtu: u16) {
            self.0.set_mtu(new_mtu)
        }

        fn window(&self) -> u64 {
            self.0.window()
        }

        fn clone_box(&self) -> Box<dyn $controller> {
            Box::new(self.clone())
        }

        fn initial_window(&self) -> u64 {
            INITIAL_WINDOW
        }

        fn into_any(self: Box<Self>) -> Box<dyn Any> {
            self
        }
    };
}

/// Initial window: quinn's own default for its controllers (10 packets of
/// 1200 bytes, at least 14720 bytes).
const INITIAL_WINDOW: u64 = 14_720;

/// Factory for [`ModelBbr`].
#[derive(Debug, Default)]
pub struct ModelBbrConfig;

impl ControllerFactory for ModelBbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(ModelBbr(Model::new(now, INITIAL_WINDOW, current_mtu)))
    }
}

/// The model as a quinn controller.
#[derive(Debug, Clone)]
pub struct ModelBbr(Model);

impl Controller for ModelBbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, _last_packet_number: u64) {
        self.0.on_sent(now, bytes)
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &quinn_proto::RttEstimator,
    ) {
        self.0.on_ack(now, sent, bytes, app_limited)
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.0.on_end_acks(now, in_flight)
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.0
            .on_loss(now, sent, lost_bytes, is_persistent_congestion)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.0.window();
        m.pacing_rate = Some(self.0.bandwidth().saturating_mul(8));
        m
    }

    model_delegation!(Controller);
}

/// The same model for iroh's QUIC stack (noq), whose interface adds packet
/// numbers and ECN flags.
#[cfg(feature = "iroh")]
pub mod noq_cc {
    use super::*;
    use noq::congestion::{
        Controller as NoqController, ControllerFactory as NoqFactory,
        ControllerMetrics as NoqMetrics,
    };

    /// Factory for [`ModelBbr`] in noq.
    #[derive(Debug, Default)]
    pub struct ModelBbrConfig;

    impl NoqFactory for ModelBbrConfig {
        fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn NoqController> {
            Box::new(ModelBbr(Model::new(now, INITIAL_WINDOW, current_mtu)))
        }
    }

    /// The model as a noq controller.
    #[derive(Debug, Clone)]
    pub struct ModelBbr(Model);

    impl NoqController for ModelBbr {
        fn on_sent(&mut self, now: Instant, bytes: u64, _largest_pn: u64) {
            self.0.on_sent(now, bytes)
        }

        fn on_ack(
            &mut self,
            now: Instant,
            sent: Instant,
            bytes: u64,
            _pn: u64,
            app_limited: bool,
            _rtt: &noq_proto::RttEstimator,
        ) {
            self.0.on_ack(now, sent, bytes, app_limited)
        }

        fn on_end_acks(
            &mut self,
            now: Instant,
            in_flight: u64,
            _app_limited: bool,
            _largest_packet_num_acked: Option<u64>,
        ) {
            self.0.on_end_acks(now, in_flight)
        }

        fn on_congestion_event(
            &mut self,
            now: Instant,
            sent: Instant,
            is_persistent_congestion: bool,
            _is_ecn: bool,
            lost_bytes: u64,
            _largest_lost_pn: u64,
        ) {
            self.0
                .on_loss(now, sent, lost_bytes, is_persistent_congestion)
        }

        fn metrics(&self) -> NoqMetrics {
            let mut m = NoqMetrics::default();
            m.congestion_window = self.0.window();
            m.bandwidth_estimate = Some(self.0.bandwidth().saturating_mul(8));
            m
        }

        model_delegation!(NoqController);
    }
}

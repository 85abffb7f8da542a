//! The iroh modes' defaults that settings, help texts and config templates
//! show: here without the `iroh` feature, so that code built without the
//! iroh stack (the fuzz targets of the settings table) reads the same
//! numbers.

/// The UDP port of a relay's QUIC address discovery unless one is set
/// (iroh's `iroh_relay::defaults::DEFAULT_RELAY_QUIC_PORT`; a test checks
/// they agree).
pub const DEFAULT_RELAY_QUIC_PORT: u16 = 7842;

/// Flow-control windows of the iroh modes with BBR, their default (per
/// stream, per connection); with `--congestion cubic` they keep noq's
/// defaults (1.25 MB per stream). noq 1.4 closes a connection once one
/// stream buffers more than 2048 packets behind a gap ("too many gaps in
/// stream buffer", fixed in quinn by quinn-rs/quinn#2814, not yet in noq):
/// about 2.4 MB with 1200-byte packets, so the window stays below that.
pub const BBR_WINDOWS: (u64, u64) = (2 << 20, 8 << 20);

#[cfg(all(test, feature = "iroh"))]
mod tests {
    #[test]
    fn the_relay_quic_port_is_irohs() {
        assert_eq!(
            super::DEFAULT_RELAY_QUIC_PORT,
            iroh_relay::defaults::DEFAULT_RELAY_QUIC_PORT
        );
    }
}

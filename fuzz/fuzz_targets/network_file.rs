//! Network files (`--network FILE|NAME`, TOML that `peerport rendezvous`
//! writes): the CLI's loader (crates/peerport-cli/src/settings/network.rs,
//! compiled in) on the input as a file, the settings each command takes
//! from it, and `--network` names.
#![no_main]

mod settings;

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use peerport_signaling::Mode;
use settings::{network, Role};

fn file() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| tempfile::tempdir().unwrap().keep().join("net.toml"))
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).unwrap();
    if let Ok(n) = network::load(path) {
        for key in settings::file::keys_set(&n) {
            assert!(network::KEYS.contains(&key.as_str()), "{key}");
        }
        // relative files are taken from the file's directory
        for f in [&n.relay_ca, &n.turn_password_file].into_iter().flatten() {
            assert!(f.is_absolute(), "{}", f.display());
        }
        for role in Role::ALL {
            for mode in Mode::ALL {
                let _ = network::for_command(n.clone(), role, mode);
            }
        }
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = network::path_of(name);
    }
});

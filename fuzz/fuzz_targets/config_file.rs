//! Config files (`peerport sender|receiver -c FILE`, TOML): the CLI's own
//! parser (crates/peerport-cli/src/settings/file.rs, compiled in), with
//! its error messages (line and column, "did you mean"), the role and
//! mode check for every command, and a round trip of what it read.
#![no_main]

mod settings;

use libfuzzer_sys::fuzz_target;
use peerport_signaling::Mode;
use settings::{file, Partial, Role};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it before the parser
    };
    match file::parse("fuzz.toml", text) {
        Ok(p) => {
            for role in Role::ALL {
                for mode in Mode::ALL {
                    let _ = file::check_file("fuzz.toml", &p, role, mode);
                }
            }
            let keys = file::keys_set(&p);
            assert!(keys.iter().all(|k| !k.contains('_')), "{keys:?}");
            // what was read, written as TOML, reads back the same
            if let Ok(again) = toml::to_string(&p) {
                let back: Partial =
                    file::parse("again.toml", &again).unwrap_or_else(|e| panic!("{e}\n{again}"));
                assert_eq!(back, p, "{again}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("config file fuzz.toml: "), "{message}");
        }
    }
});

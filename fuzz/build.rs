//! The CLI's settings table (crates/peerport-cli/src/settings/table.rs),
//! made compilable here: without its inner doc comments (it is
//! `include!`d into a module).
use std::{env, fs, path::PathBuf};

fn main() {
    let src = "../crates/peerport-cli/src/settings/table.rs";
    println!("cargo:rerun-if-changed={src}");
    let text = fs::read_to_string(src).expect("the CLI's settings table");
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("settings_table.rs");
    fs::write(out, text).unwrap();
}

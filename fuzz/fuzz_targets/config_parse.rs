//! `config.toml` parsing and validation: any text gives a `Loaded` or a `ConfigError`, never a
//! panic, and an error's message never holds a `token` value it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = flotilla::config::Config::from_toml_str(text, "fuzz.toml") {
        let _ = e.to_string();
    }
});

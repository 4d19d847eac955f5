//! The config file (`nusad --config`): TOML, then the cross-key checks,
//! then what the gateway derives from it at start-up.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nusa_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = nusa_config::parse_prefix(text);
    if let Ok(config) = Config::from_toml(text, Path::new("fuzz.toml")) {
        let _ = config.server.admin_addr();
        let _ = config.server.admin_socket_path();
        let _ = config.server.admin_token_path();
    }
});

//! `"host:port"` text (src/net.rs `ToAddrs` for `str` and `(&str, &str)`):
//! never panics, and an accepted address prints as text that parses back
//! to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop::ToAddrs;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addrs) = s.to_addrs() {
        let shown = addrs.to_string();
        let again = shown
            .as_str()
            .to_addrs()
            .unwrap_or_else(|e| panic!("{s:?} printed as {shown:?}, which fails: {e}"));
        assert_eq!(again, addrs, "{s:?} printed as {shown:?}");
    }
    // The pair form: host and port given apart.
    if let Some((host, port)) = s.split_once('\u{0}') {
        let _ = (host, port).to_addrs();
    }
});

//! Fuzz the WebAuthn finish endpoints' parsing: arbitrary bytes as the
//! `credential` of register/finish and the `assertion` of sign-in verify,
//! through JSON decoding, webauthn-rs verification against real ceremony
//! states, and Latchkey's AAGUID extraction. Nothing may panic.
//!
//! Under `cargo fuzz` (cfg `fuzzing`) this is a libFuzzer target; otherwise
//! it is a plain binary that replays the files (or directories of files)
//! named on its command line, so it builds and runs on stable.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    latchkey_service::webauthn::fuzzing::finish(data);
});

#[cfg(not(fuzzing))]
fn main() {
    let mut count = 0usize;
    for arg in std::env::args().skip(1) {
        let path = std::path::PathBuf::from(arg);
        let files: Vec<_> = if path.is_dir() {
            std::fs::read_dir(&path)
                .expect("corpus directory")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect()
        } else {
            vec![path]
        };
        for f in files {
            latchkey_service::webauthn::fuzzing::finish(&std::fs::read(&f).expect("corpus file"));
            count += 1;
        }
    }
    println!("webauthn_finish: {count} inputs replayed without a panic");
}

//! The AFL++ harness: runs the target named by `GRAMGRID_FUZZ_TARGET` (tests/fuzz sets it).
fn main() {
    let name = std::env::var("GRAMGRID_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = gramgrid_fuzz::target(&name) else {
        eprintln!(
            "GRAMGRID_FUZZ_TARGET must name a target: {}",
            gramgrid_fuzz::TARGETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}

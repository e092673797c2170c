//! SPI traffic shows at tracing's trace level, seen through a subscriber scoped to this test (the
//! interest cache is rebuilt so other tests' threads cannot hide the callsites from it).

use gramgrid_air::emulator::{Fault, Sx126xEmulator};
use gramgrid_air::sim::emulated_radio;
use gramgrid_radio::phy::PhyOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn spi_traffic_is_traced() {
    let log = Sink::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Another test thread may have hit these callsites first, with no subscriber that wants trace
    // events, and cached "never": ask every callsite again now that this one is in place.
    tracing::callsite::rebuild_interest_cache();
    let chip = Sx126xEmulator::new(Fault::None);
    emulated_radio(&chip, PhyOptions::default()).await.unwrap();
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    // the probe of the sync word register, then its answer
    assert!(text.contains("> 1d074000"), "{text}");
    assert!(text.contains("< 1424"), "{text}");
    // SetPacketType(LoRa) from lora-phy's init
    assert!(text.contains("> 8a01"), "{text}");
}

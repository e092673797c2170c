//! The production backend: lora-phy's `LoRa` driver made safe to run unattended.
//!
//! lora-phy 3.0.1 never times out, hands CRC-error frames up as good, swallows header errors and
//! panics on a chip that reads 0xFF. Here every driver call runs under a tokio timeout with a
//! reset-and-reinit on expiry, the IRQ register is watched on the SPI bus so CRC and header errors
//! are reported, the chip is probed before `LoRa::new`, and all SPI traffic is traced.

use super::{toa, Radio, RadioConfig, RadioError, RxFrame};
use embedded_hal::digital::OutputPin;
use embedded_hal_async::digital::Wait;
use embedded_hal_async::spi::{Operation, SpiDevice};
use lora_phy::iv::{GenericSx126xInterfaceVariant, GenericSx127xInterfaceVariant};
use lora_phy::mod_params::{
    Bandwidth, CodingRate, ModulationParams, PacketParams, SpreadingFactor,
};
use lora_phy::mod_traits::RadioKind;
use lora_phy::sx126x::{self, Sx1262, Sx126x, TcxoCtrlVoltage};
use lora_phy::sx127x::{self, Sx1276, Sx127x};
use lora_phy::{DelayNs, LoRa, RxMode};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

const SX126X_GET_IRQ_STATUS: u8 = 0x12;
const SX126X_IRQ_CRC_ERR: u16 = 1 << 6;
const SX126X_IRQ_HEADER_ERR: u16 = 1 << 5;
const SX126X_IRQ_RX_DONE: u16 = 1 << 1;
const SX126X_IRQ_TIMEOUT: u16 = 1 << 9;
/// PreambleDetected | SyncWordValid | HeaderValid: lora-phy treats these as "keep waiting".
const SX126X_IRQ_IN_PROGRESS: u16 = (1 << 2) | (1 << 3) | (1 << 4);
const SX127X_REG_IRQ_FLAGS: u8 = 0x12;
const SX127X_IRQ_CRC_ERR: u8 = 0x20;

const SEEN_CRC: u8 = 1;
const SEEN_HEADER: u8 = 2;

/// Which register map the SPI shim decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChipFamily {
    /// SX1261/SX1262/SX1268: command-based SPI interface.
    Sx126x,
    /// SX1272/SX1276-79: register-based SPI interface.
    Sx127x,
}

/// An SPI device that traces every transaction and watches the chip's IRQ flags go by.
///
/// On SX126x it also turns a lone HeaderErr into HeaderErr|Timeout in what lora-phy reads, because
/// lora-phy's receive loop otherwise waits on silently; `PhyRadio` reports it as `RadioError::Header`.
pub struct TracedSpi<S> {
    inner: S,
    family: ChipFamily,
    seen: Arc<AtomicU8>,
}

impl<S: SpiDevice> TracedSpi<S> {
    /// Wraps an SPI device talking to a chip of this family.
    pub fn new(inner: S, family: ChipFamily) -> Self {
        Self {
            inner,
            family,
            seen: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Flags from the most recent IRQ status read.
    fn seen(&self) -> Arc<AtomicU8> {
        self.seen.clone()
    }

    fn watch_irq(&self, operations: &mut [Operation<'_, u8>]) {
        match (self.family, &mut *operations) {
            (
                ChipFamily::Sx126x,
                [Operation::Write(cmd), Operation::Read(_status), Operation::Read(flags)],
            ) if cmd.first() == Some(&SX126X_GET_IRQ_STATUS) && flags.len() == 2 => {
                let mut f = u16::from_be_bytes([flags[0], flags[1]]);
                let mut seen = 0;
                if f & SX126X_IRQ_CRC_ERR != 0 {
                    seen |= SEEN_CRC;
                }
                if f & SX126X_IRQ_HEADER_ERR != 0 && f & SX126X_IRQ_RX_DONE == 0 {
                    seen |= SEEN_HEADER;
                    f = (f & !SX126X_IRQ_IN_PROGRESS) | SX126X_IRQ_TIMEOUT;
                    flags.copy_from_slice(&f.to_be_bytes());
                }
                self.seen.store(seen, Ordering::Relaxed);
            }
            (ChipFamily::Sx127x, [Operation::Write(cmd), Operation::Read(flags)])
                if cmd.first() == Some(&SX127X_REG_IRQ_FLAGS) && flags.len() == 1 =>
            {
                let crc = flags[0] & SX127X_IRQ_CRC_ERR != 0;
                self.seen
                    .store(if crc { SEEN_CRC } else { 0 }, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl<S: SpiDevice> embedded_hal_async::spi::ErrorType for TracedSpi<S> {
    type Error = S::Error;
}

impl<S: SpiDevice> SpiDevice for TracedSpi<S> {
    async fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), S::Error> {
        let result = self.inner.transaction(operations).await;
        if tracing::enabled!(target: "gramgrid::radio::spi", tracing::Level::TRACE) {
            for op in operations.iter() {
                match op {
                    Operation::Write(w) => {
                        tracing::trace!(target: "gramgrid::radio::spi", "> {}", hex(w))
                    }
                    Operation::Read(r) => {
                        tracing::trace!(target: "gramgrid::radio::spi", "< {}", hex(r))
                    }
                    Operation::Transfer(r, w) => {
                        tracing::trace!(target: "gramgrid::radio::spi", "> {} < {}", hex(w), hex(r))
                    }
                    Operation::TransferInPlace(b) => {
                        tracing::trace!(target: "gramgrid::radio::spi", "<> {}", hex(b))
                    }
                    Operation::DelayNs(ns) => {
                        tracing::trace!(target: "gramgrid::radio::spi", "delay {ns} ns")
                    }
                }
            }
        }
        if result.is_ok() {
            self.watch_irq(operations);
        }
        result
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

/// lora-phy's delay on tokio's clock (so a paused clock skips reset waits too).
pub struct TokioDelay;

impl DelayNs for TokioDelay {
    async fn delay_ns(&mut self, ns: u32) {
        tokio::time::sleep(Duration::from_nanos(u64::from(ns))).await;
    }
}

/// Driver settings that depend on the board, not on the link.
#[derive(Clone, Copy)]
pub struct PhyOptions {
    /// LoRaWAN public sync word (0x34) rather than private (0x12).
    pub public_network: bool,
    /// SX126x: power the chip from its DC-DC regulator rather than the LDO.
    pub use_dcdc: bool,
    /// Boosted receive gain (slightly better sensitivity, more current).
    pub rx_boost: bool,
    /// TCXO supply on DIO3 for SX126x modules that have one.
    pub tcxo: Option<TcxoCtrlVoltage>,
    /// SX127x: transmit on PA_BOOST.
    pub tx_boost: bool,
    /// Limit for any driver call that is not waiting on the air.
    pub command_timeout: Duration,
}

impl Default for PhyOptions {
    fn default() -> Self {
        Self {
            public_network: true,
            use_dcdc: true,
            rx_boost: false,
            tcxo: None,
            tx_boost: true,
            command_timeout: Duration::from_secs(1),
        }
    }
}

/// NRESET, BUSY, DIO1 and optional RF-switch pins of an SX126x board.
pub struct Sx126xPins<CTRL, WAIT> {
    /// NRESET output (active low).
    pub reset: CTRL,
    /// BUSY input: high while the chip cannot take a command.
    pub busy: WAIT,
    /// DIO1 input: the interrupt line.
    pub dio1: WAIT,
    /// Receive enable of a separate RF switch, if the board has one.
    pub rf_switch_rx: Option<CTRL>,
    /// Transmit enable of a separate RF switch, if the board has one.
    pub rf_switch_tx: Option<CTRL>,
}

/// NRESET, DIO0 and optional RF-switch pins of an SX127x board.
pub struct Sx127xPins<CTRL, WAIT> {
    /// NRESET output (active low).
    pub reset: CTRL,
    /// DIO0 input: the interrupt line (TxDone, RxDone).
    pub dio0: WAIT,
    /// Receive enable of a separate RF switch, if the board has one.
    pub rf_switch_rx: Option<CTRL>,
    /// Transmit enable of a separate RF switch, if the board has one.
    pub rf_switch_tx: Option<CTRL>,
}

/// lora-phy's SX1262 radio kind over a traced SPI device.
pub type Sx1262Kind<S, CTRL, WAIT> =
    Sx126x<TracedSpi<S>, GenericSx126xInterfaceVariant<CTRL, WAIT>, Sx1262>;
/// lora-phy's SX1276 radio kind over a traced SPI device.
pub type Sx1276Kind<S, CTRL, WAIT> =
    Sx127x<TracedSpi<S>, GenericSx127xInterfaceVariant<CTRL, WAIT>, Sx1276>;

/// A `Radio` on lora-phy: SX1262 or SX1276, real or emulated.
pub struct PhyRadio<RK: RadioKind> {
    lora: LoRa<RK, TokioDelay>,
    seen: Arc<AtomicU8>,
    config: RadioConfig,
    options: PhyOptions,
    /// Modulation and packet parameters of the armed continuous receive, if armed.
    rx: Option<(ModulationParams, PacketParams)>,
}

fn driver(op: &'static str) -> impl Fn(lora_phy::mod_params::RadioError) -> RadioError {
    move |e| RadioError::Driver {
        op,
        detail: format!("{e:?}"),
    }
}

fn pin_error<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> RadioError {
    move |e| RadioError::Io(format!("{what}: {e:?}"))
}

/// Pulses NRESET (active low) and waits for BUSY to fall, if the board has BUSY.
async fn pulse_reset<CTRL: OutputPin, WAIT: Wait>(
    reset: &mut CTRL,
    busy: Option<&mut WAIT>,
) -> Result<(), RadioError> {
    reset.set_low().map_err(pin_error("NRESET low"))?;
    tokio::time::sleep(Duration::from_millis(1)).await;
    reset.set_high().map_err(pin_error("NRESET high"))?;
    match busy {
        Some(b) => b.wait_for_low().await.map_err(pin_error("BUSY")),
        // SX127x: 5 ms from reset to ready
        None => {
            tokio::time::sleep(Duration::from_millis(6)).await;
            Ok(())
        }
    }
}

/// Reads `len` bytes after writing `cmd`, failing clearly if the answer is not `expected`.
async fn probe<S: SpiDevice>(
    spi: &mut S,
    what: &'static str,
    cmd: &[u8],
    expected: &[u8],
) -> Result<(), RadioError> {
    let mut got = vec![0u8; expected.len()];
    spi.transaction(&mut [Operation::Write(cmd), Operation::Read(&mut got)])
        .await
        .map_err(pin_error("SPI"))?;
    if got == expected {
        Ok(())
    } else {
        Err(RadioError::NoChip {
            what,
            got,
            expected: expected.to_vec(),
        })
    }
}

async fn limited<T>(
    op: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, RadioError>>,
) -> Result<T, RadioError> {
    timeout(limit, f)
        .await
        .map_err(|_| RadioError::Unresponsive { op, limit })?
}

impl<S, CTRL, WAIT> PhyRadio<Sx1262Kind<S, CTRL, WAIT>>
where
    S: SpiDevice,
    CTRL: OutputPin,
    WAIT: Wait,
{
    /// Resets and probes an SX1262 (sync word register 0x0740 must read 14 24), then initialises
    /// lora-phy on it.
    pub async fn sx1262(
        spi: S,
        mut pins: Sx126xPins<CTRL, WAIT>,
        options: PhyOptions,
    ) -> Result<Self, RadioError> {
        let mut spi = TracedSpi::new(spi, ChipFamily::Sx126x);
        let limit = options.command_timeout;
        limited(
            "reset (BUSY stays high: chip held in reset or not powered?)",
            limit,
            pulse_reset(&mut pins.reset, Some(&mut pins.busy)),
        )
        .await?;
        limited(
            "sync word probe",
            limit,
            probe(
                &mut spi,
                "SX126x sync word register 0x0740",
                &[0x1D, 0x07, 0x40, 0x00],
                &[0x14, 0x24],
            ),
        )
        .await?;
        let iv = GenericSx126xInterfaceVariant::new(
            pins.reset,
            pins.dio1,
            pins.busy,
            pins.rf_switch_rx,
            pins.rf_switch_tx,
        )
        .map_err(driver("interface"))?;
        let config = sx126x::Config {
            chip: Sx1262,
            tcxo_ctrl: options.tcxo,
            use_dcdc: options.use_dcdc,
            rx_boost: options.rx_boost,
        };
        let seen = spi.seen();
        Self::start(Sx126x::new(spi, iv, config), seen, options).await
    }
}

impl<S, CTRL, WAIT> PhyRadio<Sx1276Kind<S, CTRL, WAIT>>
where
    S: SpiDevice,
    CTRL: OutputPin,
    WAIT: Wait,
{
    /// Resets and probes an SX1276 (RegVersion 0x42 must read 0x12), then initialises lora-phy.
    ///
    /// lora-phy leaves low-data-rate optimisation off on SX127x at SF11/BW125, so such a radio does
    /// not decode SX126x frames there (and vice versa).
    pub async fn sx1276(
        spi: S,
        mut pins: Sx127xPins<CTRL, WAIT>,
        options: PhyOptions,
    ) -> Result<Self, RadioError> {
        let mut spi = TracedSpi::new(spi, ChipFamily::Sx127x);
        let limit = options.command_timeout;
        limited(
            "reset",
            limit,
            pulse_reset::<CTRL, WAIT>(&mut pins.reset, None),
        )
        .await?;
        limited(
            "version probe",
            limit,
            probe(&mut spi, "SX127x RegVersion 0x42", &[0x42], &[0x12]),
        )
        .await?;
        let iv = GenericSx127xInterfaceVariant::new(
            pins.reset,
            pins.dio0,
            pins.rf_switch_rx,
            pins.rf_switch_tx,
        )
        .map_err(driver("interface"))?;
        let config = sx127x::Config {
            chip: Sx1276,
            tcxo_used: options.tcxo.is_some(),
            tx_boost: options.tx_boost,
            rx_boost: options.rx_boost,
        };
        let seen = spi.seen();
        Self::start(Sx127x::new(spi, iv, config), seen, options).await
    }
}

fn spreading_factor(sf: u8) -> Result<SpreadingFactor, RadioError> {
    Ok(match sf {
        7 => SpreadingFactor::_7,
        8 => SpreadingFactor::_8,
        9 => SpreadingFactor::_9,
        10 => SpreadingFactor::_10,
        11 => SpreadingFactor::_11,
        12 => SpreadingFactor::_12,
        _ => return Err(RadioError::InvalidConfig(format!("spreading factor {sf}"))),
    })
}

fn bandwidth(hz: u32) -> Result<Bandwidth, RadioError> {
    Ok(match hz {
        125_000 => Bandwidth::_125KHz,
        250_000 => Bandwidth::_250KHz,
        500_000 => Bandwidth::_500KHz,
        _ => return Err(RadioError::InvalidConfig(format!("bandwidth {hz} Hz"))),
    })
}

fn coding_rate(denominator: u8) -> Result<CodingRate, RadioError> {
    Ok(match denominator {
        5 => CodingRate::_4_5,
        6 => CodingRate::_4_6,
        7 => CodingRate::_4_7,
        8 => CodingRate::_4_8,
        _ => {
            return Err(RadioError::InvalidConfig(format!(
                "coding rate 4/{denominator}"
            )))
        }
    })
}

impl<RK: RadioKind> PhyRadio<RK> {
    async fn start(kind: RK, seen: Arc<AtomicU8>, options: PhyOptions) -> Result<Self, RadioError> {
        // LoRa::new resets the chip and waits on BUSY: a chip that stops answering now must not hang us.
        let lora = timeout(
            options.command_timeout * 2,
            LoRa::new(kind, options.public_network, TokioDelay),
        )
        .await
        .map_err(|_| RadioError::Unresponsive {
            op: "init",
            limit: options.command_timeout * 2,
        })?
        .map_err(driver("init"))?;
        Ok(Self {
            lora,
            seen,
            config: RadioConfig::default(),
            options,
            rx: None,
        })
    }

    fn modulation_params(&mut self, tx: bool) -> Result<ModulationParams, RadioError> {
        let m = self.config.modulation(tx);
        self.lora
            .create_modulation_params(
                spreading_factor(m.spreading_factor)?,
                bandwidth(m.bandwidth_hz)?,
                coding_rate(m.coding_rate)?,
                m.frequency_hz,
            )
            .map_err(driver("modulation parameters"))
    }

    /// Maps the result of a time-limited driver call; on expiry, resets and re-initialises the chip.
    async fn settle<T>(
        &mut self,
        op: &'static str,
        limit: Duration,
        result: Result<Result<T, lora_phy::mod_params::RadioError>, tokio::time::error::Elapsed>,
    ) -> Result<T, RadioError> {
        match result {
            Ok(r) => r.map_err(driver(op)),
            Err(_) => {
                tracing::warn!(
                    op,
                    ?limit,
                    "radio driver call timed out; resetting the chip"
                );
                self.rx = None;
                let reinit = self.options.command_timeout * 2;
                match timeout(reinit, self.lora.init()).await {
                    Ok(Ok(())) => Err(RadioError::Unresponsive { op, limit }),
                    Ok(Err(e)) => Err(RadioError::RecoveryFailed(format!("{e:?}"))),
                    Err(_) => Err(RadioError::RecoveryFailed(format!(
                        "re-init took over {reinit:?}"
                    ))),
                }
            }
        }
    }
}

impl<RK: RadioKind> Radio for PhyRadio<RK> {
    async fn configure(&mut self, config: RadioConfig) -> Result<(), RadioError> {
        config.validate()?;
        self.config = config;
        self.rx = None;
        Ok(())
    }

    async fn transmit(&mut self, payload: &[u8]) -> Result<Duration, RadioError> {
        if payload.len() > 255 {
            return Err(RadioError::PayloadTooLong(payload.len()));
        }
        self.rx = None;
        let mp = self.modulation_params(true)?;
        let m = self.config.modulation(true);
        let mut pp = self
            .lora
            .create_tx_packet_params(m.preamble_symbols, false, true, m.iq_inverted, &mp)
            .map_err(driver("packet parameters"))?;
        let limit = self.options.command_timeout;
        let power = i32::from(self.config.tx_power_dbm);
        let r = timeout(
            limit,
            self.lora.prepare_for_tx(&mp, &mut pp, power, payload),
        )
        .await;
        self.settle("prepare transmit", limit, r).await?;
        let airtime = toa::time_on_air(&m, payload.len());
        // TxDone is due after the airtime; twice that plus slack means the chip or DIO1 is gone.
        let limit = airtime * 2 + self.options.command_timeout;
        let r = timeout(limit, self.lora.tx()).await;
        self.settle("transmit", limit, r).await?;
        Ok(airtime)
    }

    async fn receive(&mut self, within: Duration) -> Result<RxFrame, RadioError> {
        let deadline = Instant::now() + within;
        if self.rx.is_none() {
            let mp = self.modulation_params(false)?;
            let m = self.config.modulation(false);
            let pp = self
                .lora
                .create_rx_packet_params(m.preamble_symbols, false, 255, true, m.iq_inverted, &mp)
                .map_err(driver("packet parameters"))?;
            let limit = self.options.command_timeout;
            let r = timeout(
                limit,
                self.lora.prepare_for_rx(RxMode::Continuous, &mp, &pp),
            )
            .await;
            self.settle("prepare receive", limit, r).await?;
            self.rx = Some((mp, pp));
        }
        let Some((_, pp)) = self.rx.as_ref() else {
            return Err(RadioError::InvalidConfig(
                "receive parameters missing".into(),
            ));
        };
        let mut buf = [0u8; 255];
        self.seen.store(0, Ordering::Relaxed);
        // Silence is normal while receiving: expiry only means nothing came. Dropping lora-phy's
        // continuous rx() mid-wait is safe; the next call re-arms it.
        let outcome = match timeout_at(deadline, self.lora.rx(pp, &mut buf)).await {
            Err(_) => return Err(RadioError::Timeout(within)),
            Ok(r) => r,
        };
        let seen = self.seen.load(Ordering::Relaxed);
        match outcome {
            Ok((_, status)) if seen & SEEN_CRC != 0 => Err(RadioError::Crc {
                rssi_dbm: status.rssi,
                snr_db: status.snr,
            }),
            Ok((len, status)) => Ok(RxFrame {
                payload: buf[..usize::from(len)].to_vec(),
                rssi_dbm: status.rssi,
                snr_db: status.snr,
                received_at: Instant::now(),
                spreading_factor: self.config.spreading_factor,
                frequency_hz: self.config.frequency_hz,
            }),
            Err(lora_phy::mod_params::RadioError::ReceiveTimeout) if seen & SEEN_HEADER != 0 => {
                Err(RadioError::Header)
            }
            Err(e) => {
                self.rx = None;
                Err(driver("receive")(e))
            }
        }
    }
}

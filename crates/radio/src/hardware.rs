//! Linux binding of a real HAT (feature `hardware`): an async SPI device over spidev and async GPIO
//! pins over the GPIO character device (gpiocdev), so lora-phy drives the chip on a Pi.

use super::config::{ChipModel, HardwareRadioConfig};
use super::phy::{PhyOptions, PhyRadio, Sx1262Kind, Sx126xPins, Sx1276Kind, Sx127xPins};
use super::{Radio, RadioConfig, RadioError, RxFrame};
use embedded_hal_async::spi::Operation;
use gpiocdev::line::{EdgeDetection, EdgeKind, Value};
use gpiocdev::tokio::AsyncRequest;
use gpiocdev::Request;
use lora_phy::sx126x::TcxoCtrlVoltage;
use spidev::{SpiModeFlags, Spidev, SpidevOptions, SpidevTransfer};
use std::path::Path;
use std::time::Duration;

/// An I/O failure on the SPI device or a GPIO line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HwError(String);

impl embedded_hal::digital::Error for HwError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl embedded_hal::spi::Error for HwError {
    fn kind(&self) -> embedded_hal::spi::ErrorKind {
        embedded_hal::spi::ErrorKind::Other
    }
}

fn hw<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> HwError + '_ {
    move |e| HwError(format!("{what}: {e}"))
}

/// An spidev node as an async `SpiDevice`. One transaction is one SPI_IOC_MESSAGE ioctl, so chip
/// select stays asserted across its operations; the ioctl blocks for the few microseconds the
/// bytes take on the wire, which is shorter than a task switch would be.
pub struct SpidevDevice {
    dev: Spidev,
}

impl SpidevDevice {
    /// Opens a spidev node (e.g. `/dev/spidev0.0`) in SPI mode 0, 8-bit words, at `speed_hz`.
    pub fn open(path: &Path, speed_hz: u32) -> Result<Self, RadioError> {
        let io = |e: std::io::Error| RadioError::Io(format!("{}: {e}", path.display()));
        let mut dev = Spidev::open(path).map_err(io)?;
        dev.configure(
            &SpidevOptions::new()
                .bits_per_word(8)
                .max_speed_hz(speed_hz)
                .mode(SpiModeFlags::SPI_MODE_0)
                .build(),
        )
        .map_err(io)?;
        Ok(Self { dev })
    }
}

impl embedded_hal_async::spi::ErrorType for SpidevDevice {
    type Error = HwError;
}

impl embedded_hal_async::spi::SpiDevice for SpidevDevice {
    async fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), HwError> {
        // spidev wants equal-length tx/rx buffers per transfer: stage everything, then copy back.
        let mut staged: Vec<(Vec<u8>, Vec<u8>, u16)> = operations
            .iter()
            .map(|op| match op {
                Operation::Write(w) => (w.to_vec(), vec![0; w.len()], 0),
                Operation::Read(r) => (vec![0; r.len()], vec![0; r.len()], 0),
                Operation::Transfer(r, w) => {
                    let n = r.len().max(w.len());
                    let mut tx = w.to_vec();
                    tx.resize(n, 0);
                    (tx, vec![0; n], 0)
                }
                Operation::TransferInPlace(b) => (b.to_vec(), vec![0; b.len()], 0),
                Operation::DelayNs(ns) => (
                    Vec::new(),
                    Vec::new(),
                    u16::try_from(ns.div_ceil(1000)).unwrap_or(u16::MAX),
                ),
            })
            .collect();
        {
            let mut transfers: Vec<SpidevTransfer<'_, '_>> = staged
                .iter_mut()
                .map(|(tx, rx, delay_us)| {
                    if tx.is_empty() {
                        SpidevTransfer::delay(*delay_us)
                    } else {
                        SpidevTransfer::read_write(tx, rx)
                    }
                })
                .collect();
            self.dev
                .transfer_multiple(&mut transfers)
                .map_err(hw("spidev transfer"))?;
        }
        for (op, (_, rx, _)) in operations.iter_mut().zip(staged.iter()) {
            match op {
                Operation::Read(r) => r.copy_from_slice(rx),
                Operation::Transfer(r, _) => {
                    let n = r.len();
                    r.copy_from_slice(&rx[..n]);
                }
                Operation::TransferInPlace(b) => b.copy_from_slice(rx),
                Operation::Write(_) | Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// An output line (NRESET, RF switch).
pub struct GpioOutput {
    req: Request,
    offset: u32,
}

impl GpioOutput {
    /// Requests line `offset` of the GPIO character device `chip` as an output, driven high at once
    /// if `initial_high`, else low.
    pub fn open(chip: &Path, offset: u32, initial_high: bool) -> Result<Self, RadioError> {
        let value = if initial_high {
            Value::Active
        } else {
            Value::Inactive
        };
        let req = Request::builder()
            .on_chip(chip)
            .with_consumer("gramgrid-radio")
            .with_line(offset)
            .as_output(value)
            .request()
            .map_err(|e| RadioError::Io(format!("{} line {offset}: {e}", chip.display())))?;
        Ok(Self { req, offset })
    }
}

impl embedded_hal::digital::ErrorType for GpioOutput {
    type Error = HwError;
}

impl embedded_hal::digital::OutputPin for GpioOutput {
    fn set_low(&mut self) -> Result<(), HwError> {
        self.req
            .set_value(self.offset, Value::Inactive)
            .map_err(hw("gpio set"))
    }
    fn set_high(&mut self) -> Result<(), HwError> {
        self.req
            .set_value(self.offset, Value::Active)
            .map_err(hw("gpio set"))
    }
}

/// An input line with edge events (BUSY, DIO1) as an async `Wait`.
pub struct GpioInput {
    req: AsyncRequest,
    offset: u32,
}

impl GpioInput {
    /// Must be called inside a tokio runtime (the line's fd is registered with it).
    pub fn open(chip: &Path, offset: u32) -> Result<Self, RadioError> {
        let req = Request::builder()
            .on_chip(chip)
            .with_consumer("gramgrid-radio")
            .with_line(offset)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .request()
            .map_err(|e| RadioError::Io(format!("{} line {offset}: {e}", chip.display())))?;
        Ok(Self {
            req: AsyncRequest::new(req),
            offset,
        })
    }

    fn is_high(&self) -> Result<bool, HwError> {
        Ok(self
            .req
            .as_ref()
            .value(self.offset)
            .map_err(hw("gpio read"))?
            == Value::Active)
    }

    /// Waits for the line to be at `high`. The level is re-read after every edge, so edges queued
    /// before the call cannot satisfy it falsely.
    async fn wait_level(&mut self, high: bool) -> Result<(), HwError> {
        while self.is_high()? != high {
            self.req.read_edge_event().await.map_err(hw("gpio edge"))?;
        }
        Ok(())
    }

    async fn wait_edge(&mut self, kind: Option<EdgeKind>) -> Result<(), HwError> {
        loop {
            let ev = self.req.read_edge_event().await.map_err(hw("gpio edge"))?;
            if kind.is_none_or(|k| k == ev.kind) {
                return Ok(());
            }
        }
    }
}

impl embedded_hal::digital::ErrorType for GpioInput {
    type Error = HwError;
}

impl embedded_hal_async::digital::Wait for GpioInput {
    async fn wait_for_high(&mut self) -> Result<(), HwError> {
        self.wait_level(true).await
    }
    async fn wait_for_low(&mut self) -> Result<(), HwError> {
        self.wait_level(false).await
    }
    async fn wait_for_rising_edge(&mut self) -> Result<(), HwError> {
        self.wait_edge(Some(EdgeKind::Rising)).await
    }
    async fn wait_for_falling_edge(&mut self) -> Result<(), HwError> {
        self.wait_edge(Some(EdgeKind::Falling)).await
    }
    async fn wait_for_any_edge(&mut self) -> Result<(), HwError> {
        self.wait_edge(None).await
    }
}

fn tcxo(volts: Option<f32>) -> Result<Option<TcxoCtrlVoltage>, RadioError> {
    let Some(v) = volts else { return Ok(None) };
    let table = [
        (1.6, TcxoCtrlVoltage::Ctrl1V6),
        (1.7, TcxoCtrlVoltage::Ctrl1V7),
        (1.8, TcxoCtrlVoltage::Ctrl1V8),
        (2.2, TcxoCtrlVoltage::Ctrl2V2),
        (2.4, TcxoCtrlVoltage::Ctrl2V4),
        (2.7, TcxoCtrlVoltage::Ctrl2V7),
        (3.0, TcxoCtrlVoltage::Ctrl3V0),
        (3.3, TcxoCtrlVoltage::Ctrl3V3),
    ];
    table
        .into_iter()
        .find(|(t, _)| (t - v).abs() < 0.05)
        .map(|(_, c)| Some(c))
        .ok_or_else(|| {
            RadioError::InvalidConfig(format!(
                "TCXO voltage {v} V is not one of 1.6-3.3 V the SX126x supplies"
            ))
        })
}

/// An SX1262 on spidev and GPIO character-device lines.
pub type HardwareSx1262 = PhyRadio<Sx1262Kind<SpidevDevice, GpioOutput, GpioInput>>;
/// An SX1276 on spidev and GPIO character-device lines.
pub type HardwareSx1276 = PhyRadio<Sx1276Kind<SpidevDevice, GpioOutput, GpioInput>>;

/// The gateway's real radio, whichever chip the config names.
pub enum HardwareRadio {
    /// `chip = "sx1262"`.
    Sx1262(HardwareSx1262),
    /// `chip = "sx1276"`.
    Sx1276(HardwareSx1276),
}

impl HardwareRadio {
    /// Opens the SPI device and GPIO lines, probes the chip and initialises lora-phy on it.
    pub async fn open(config: &HardwareRadioConfig) -> Result<Self, RadioError> {
        let options = PhyOptions {
            public_network: config.public_network,
            use_dcdc: config.use_dcdc,
            rx_boost: config.rx_boost,
            tcxo: tcxo(config.tcxo_volts)?,
            tx_boost: true,
            command_timeout: config.command_timeout,
        };
        let spi = SpidevDevice::open(&config.spi_device, config.spi_speed_hz)?;
        let chip = config.gpio_chip.as_path();
        let switch = |line: Option<u32>| line.map(|l| GpioOutput::open(chip, l, false)).transpose();
        let reset = GpioOutput::open(chip, config.reset_line, true)?;
        let (rf_switch_rx, rf_switch_tx) = (
            switch(config.rf_switch_rx_line)?,
            switch(config.rf_switch_tx_line)?,
        );
        let irq = GpioInput::open(chip, config.dio1_line)?;
        match config.chip {
            ChipModel::Sx1262 => {
                let pins = Sx126xPins {
                    reset,
                    busy: GpioInput::open(chip, config.busy_line)?,
                    dio1: irq,
                    rf_switch_rx,
                    rf_switch_tx,
                };
                Ok(Self::Sx1262(PhyRadio::sx1262(spi, pins, options).await?))
            }
            ChipModel::Sx1276 => {
                let pins = Sx127xPins {
                    reset,
                    dio0: irq,
                    rf_switch_rx,
                    rf_switch_tx,
                };
                Ok(Self::Sx1276(PhyRadio::sx1276(spi, pins, options).await?))
            }
        }
    }
}

impl Radio for HardwareRadio {
    async fn configure(&mut self, config: RadioConfig) -> Result<(), RadioError> {
        match self {
            Self::Sx1262(r) => r.configure(config).await,
            Self::Sx1276(r) => r.configure(config).await,
        }
    }
    async fn transmit(&mut self, payload: &[u8]) -> Result<Duration, RadioError> {
        match self {
            Self::Sx1262(r) => r.transmit(payload).await,
            Self::Sx1276(r) => r.transmit(payload).await,
        }
    }
    async fn receive(&mut self, within: Duration) -> Result<RxFrame, RadioError> {
        match self {
            Self::Sx1262(r) => r.receive(within).await,
            Self::Sx1276(r) => r.receive(within).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcxo_voltages_map_to_the_chip_settings() {
        assert!(tcxo(None).unwrap().is_none());
        assert!(tcxo(Some(1.8)).unwrap().is_some());
        assert!(matches!(tcxo(Some(2.0)), Err(RadioError::InvalidConfig(_))));
    }

    #[tokio::test]
    async fn missing_devices_are_reported_not_panicked() {
        let config = HardwareRadioConfig {
            spi_device: "/nonexistent/spidev9.9".into(),
            ..HardwareRadioConfig::default()
        };
        match HardwareRadio::open(&config).await {
            Err(RadioError::Io(msg)) => assert!(msg.contains("spidev9.9"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a device that does not exist"),
        }
    }
}

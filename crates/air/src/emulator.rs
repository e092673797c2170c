//! An SX1262 emulated at SPI command level, so the real lora-phy driver runs against the simulated air.
//!
//! It models what lora-phy 3.0.1 uses (init, transmit, single and continuous receive, CAD, standby,
//! sleep): the command set, the register file, the 256-byte data buffer, the IRQ status register,
//! BUSY and DIO1. Timed events (end of a transmission, CAD, receive timeout) are evaluated lazily on
//! tokio's clock, so the emulator needs no task of its own and runs under a paused clock.

use crate::air::{AirPort, Reception, ReceptionSink, Transmission, Verdict};
use gramgrid_radio::{toa, Modulation};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// IRQ register bits (datasheet table 13-29).
pub mod irq {
    /// TxDone: the packet has been sent.
    pub const TX_DONE: u16 = 1 << 0;
    /// RxDone: a packet has been received.
    pub const RX_DONE: u16 = 1 << 1;
    /// PreambleDetected: a preamble was heard.
    pub const PREAMBLE_DETECTED: u16 = 1 << 2;
    /// SyncWordValid: a valid sync word was detected.
    pub const SYNC_WORD_VALID: u16 = 1 << 3;
    /// HeaderValid: a valid LoRa header was received.
    pub const HEADER_VALID: u16 = 1 << 4;
    /// HeaderErr: the LoRa header CRC failed.
    pub const HEADER_ERR: u16 = 1 << 5;
    /// CrcErr: the payload CRC failed.
    pub const CRC_ERR: u16 = 1 << 6;
    /// CadDone: channel activity detection finished.
    pub const CAD_DONE: u16 = 1 << 7;
    /// CadDetected: channel activity detection found a LoRa signal.
    pub const CAD_DETECTED: u16 = 1 << 8;
    /// Timeout: the receive or transmit timeout expired.
    pub const TIMEOUT: u16 = 1 << 9;
}

/// Command status, bits 3:1 of the status byte.
const STATUS_DATA_AVAILABLE: u8 = 0x2;
const STATUS_PROCESSING_ERROR: u8 = 0x4;
const STATUS_EXECUTION_FAILURE: u8 = 0x5;
const STATUS_TX_DONE: u8 = 0x6;

/// Sync word register: its reset value 0x1424 is what a probe expects to read.
pub const REG_LORA_SYNC_WORD: u16 = 0x0740;
const REG_IQ_POLARITY: u16 = 0x0736;
const REG_TX_MODULATION: u16 = 0x0889;
const REG_TX_CLAMP: u16 = 0x08D8;
const REG_RX_GAIN: u16 = 0x08AC;

/// Time from releasing NRESET until BUSY falls (datasheet: about 3.5 ms).
const RESET_BUSY: Duration = Duration::from_micros(3500);

/// A fault to inject, for the cases a gateway must survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// A healthy chip.
    #[default]
    None,
    /// No chip on the bus: MISO floats high (all 0xFF), BUSY and DIO1 stay low.
    Absent,
    /// The chip works but its DIO1 line is not connected.
    NoDio1,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Sleep,
    StandbyRc,
    StandbyXosc,
    Fs,
    Tx {
        end: Instant,
    },
    Rx {
        deadline: Option<Instant>,
        single: bool,
    },
    Cad {
        end: Instant,
        detected: bool,
    },
}

impl Mode {
    /// Chip mode, bits 6:4 of the status byte.
    fn status_bits(self) -> u8 {
        match self {
            Mode::Sleep | Mode::StandbyRc => 0x2,
            Mode::StandbyXosc => 0x3,
            Mode::Fs => 0x4,
            Mode::Rx { .. } | Mode::Cad { .. } => 0x5,
            Mode::Tx { .. } => 0x6,
        }
    }
}

/// Work for the air, done after the chip lock is released.
enum Effect {
    Transmit(Transmission),
    Listen(Option<Modulation>),
}

struct State {
    fault: Fault,
    in_reset: bool,
    mode: Mode,
    busy_until: Option<Instant>,
    regs: Vec<u8>,
    buffer: [u8; 256],
    tx_base: u8,
    rx_base: u8,
    packet_type: u8,
    /// Raw SetModulationParams bytes: SF, BW code, CR code, LDRO.
    mod_params: [u8; 4],
    preamble: u16,
    implicit_header: bool,
    payload_len: u8,
    crc_on: bool,
    iq_inverted: bool,
    pll_steps: u32,
    /// SetTxParams power byte and SetPaConfig (paDutyCycle, hpMax, deviceSel).
    tx_power_param: i8,
    pa_config: [u8; 3],
    irq: u16,
    irq_mask: u16,
    dio1_mask: u16,
    cmd_status: u8,
    rx_len: u8,
    rx_start: u8,
    packet_status: [u8; 3],
    symbol_timeout: u8,
    tuned: Option<Modulation>,
    errors: u64,
}

impl State {
    fn power_on(fault: Fault) -> Self {
        let mut regs = vec![0u8; 0x1000];
        regs[usize::from(REG_LORA_SYNC_WORD)] = 0x14;
        regs[usize::from(REG_LORA_SYNC_WORD) + 1] = 0x24;
        regs[usize::from(REG_IQ_POLARITY)] = 0x0D;
        regs[usize::from(REG_TX_MODULATION)] = 0x04;
        regs[usize::from(REG_TX_CLAMP)] = 0xC8;
        regs[usize::from(REG_RX_GAIN)] = 0x94;
        Self {
            fault,
            in_reset: false,
            mode: Mode::StandbyRc,
            busy_until: None,
            regs,
            buffer: [0; 256],
            tx_base: 0,
            rx_base: 0,
            packet_type: 0,
            mod_params: [7, 4, 1, 0],
            preamble: 8,
            implicit_header: false,
            payload_len: 0,
            crc_on: true,
            iq_inverted: false,
            pll_steps: 0,
            tx_power_param: 0,
            pa_config: [0x04, 0x07, 0x00],
            irq: 0,
            irq_mask: 0,
            dio1_mask: 0,
            cmd_status: 0,
            rx_len: 0,
            rx_start: 0,
            packet_status: [0; 3],
            symbol_timeout: 0,
            tuned: None,
            errors: 0,
        }
    }

    fn status(&self) -> u8 {
        (self.mode.status_bits() << 4) | (self.cmd_status << 1)
    }

    fn raise(&mut self, bits: u16) {
        self.irq |= bits & self.irq_mask;
    }

    fn bandwidth_hz(&self) -> Option<u32> {
        Some(match self.mod_params[1] {
            0x00 => 7_810,
            0x08 => 10_420,
            0x01 => 15_630,
            0x09 => 20_830,
            0x02 => 31_250,
            0x0A => 41_670,
            0x03 => 62_500,
            0x04 => 125_000,
            0x05 => 250_000,
            0x06 => 500_000,
            _ => return None,
        })
    }

    fn frequency_hz(&self) -> u32 {
        // RF = steps * Fxtal / 2^25 with a 32 MHz crystal.
        ((u64::from(self.pll_steps) * 32_000_000) >> 25) as u32
    }

    /// The modulation the chip is configured for, as the air sees it.
    fn modulation(&self) -> Modulation {
        Modulation {
            frequency_hz: self.frequency_hz(),
            spreading_factor: self.mod_params[0],
            bandwidth_hz: self.bandwidth_hz().unwrap_or(125_000),
            coding_rate: self.mod_params[2] + 4,
            preamble_symbols: self.preamble,
            explicit_header: !self.implicit_header,
            crc_on: self.crc_on,
            iq_inverted: self.iq_inverted,
        }
    }

    /// Power at the antenna. The datasheet's optimal PA settings (table 13-21) reach 14, 17 and 20 dBm
    /// by lowering hpMax with the power byte left at 22; the low-power PA shifts by its duty cycle.
    fn output_power_dbm(&self) -> f64 {
        let [duty, hp_max, device_sel] = self.pa_config;
        let offset = if device_sel == 0 {
            match hp_max {
                0x07.. => 0,
                0x05..=0x06 => -2,
                0x03..=0x04 => -5,
                _ => -8,
            }
        } else {
            match duty {
                0x06.. => 1,
                0x04..=0x05 => 0,
                _ => -3,
            }
        };
        f64::from(i16::from(self.tx_power_param) + offset)
    }

    fn leave_rx(&mut self, effects: &mut Vec<Effect>) {
        if self.tuned.take().is_some() {
            effects.push(Effect::Listen(None));
        }
    }

    fn enter_standby(&mut self, mode: Mode, effects: &mut Vec<Effect>) {
        self.leave_rx(effects);
        self.mode = mode;
    }

    /// Applies the timed events that are due by `now`.
    fn advance(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        match self.mode {
            Mode::Tx { end } if now >= end => {
                self.mode = Mode::StandbyRc;
                self.cmd_status = STATUS_TX_DONE;
                self.raise(irq::TX_DONE);
            }
            Mode::Rx {
                deadline: Some(d), ..
            } if now >= d => {
                self.enter_standby(Mode::StandbyRc, effects);
                self.raise(irq::TIMEOUT);
            }
            Mode::Cad { end, detected } if now >= end => {
                // both flags come together at the end: lora-phy 3.0.1 hits unreachable!() if
                // DIO1 rises on CadDetected alone
                self.mode = Mode::StandbyRc;
                self.raise(irq::CAD_DONE | if detected { irq::CAD_DETECTED } else { 0 });
            }
            _ => {}
        }
        if self.busy_until.is_some_and(|t| now >= t) {
            self.busy_until = None;
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let mode_event = match self.mode {
            Mode::Tx { end } | Mode::Cad { end, .. } => Some(end),
            Mode::Rx { deadline, .. } => deadline,
            _ => None,
        };
        match (mode_event, self.busy_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn busy(&self) -> bool {
        self.fault != Fault::Absent
            && (self.in_reset || self.busy_until.is_some() || self.mode == Mode::Sleep)
    }

    fn dio1(&self) -> bool {
        self.fault == Fault::None && !self.in_reset && self.irq & self.dio1_mask != 0
    }

    /// Executes one SPI transaction: `mosi` in, the MISO bytes out (same length).
    fn execute(
        &mut self,
        mosi: &[u8],
        now: Instant,
        port: Option<&Arc<dyn AirPort>>,
        effects: &mut Vec<Effect>,
    ) -> Vec<u8> {
        let mut miso = vec![0xFF; mosi.len()];
        if self.fault == Fault::Absent || self.in_reset || mosi.is_empty() {
            return miso;
        }
        if self.mode == Mode::Sleep {
            // NSS falling wakes the chip; configuration in the retention list survives.
            self.mode = Mode::StandbyRc;
        }
        self.advance(now, effects);
        let status = self.status();
        miso.iter_mut().for_each(|b| *b = status);
        let op = mosi[0];
        let args = &mosi[1..];
        // How many parameter bytes each set-command takes.
        let need = |n: usize| args.len() >= n;
        let mut ok = true;
        let mut unknown = false;
        match op {
            0xC0 => {} // GetStatus: the status byte is the answer
            0x80 if need(1) => {
                let mode = if args[0] & 1 == 1 {
                    Mode::StandbyXosc
                } else {
                    Mode::StandbyRc
                };
                self.enter_standby(mode, effects);
            }
            0x84 if need(1) => {
                self.enter_standby(Mode::Sleep, effects);
            }
            0xC1 => self.enter_standby(Mode::Fs, effects),
            0x83 if need(3) => ok = self.start_tx(now, port, effects),
            0x82 if need(3) => {
                let t = u32::from_be_bytes([0, args[0], args[1], args[2]]);
                ok = self.start_rx(t, now, effects);
            }
            0xC5 => ok = self.start_cad(now, port, effects),
            0x8A if need(1) && args[0] <= 1 => self.packet_type = args[0],
            0x11 => put(&mut miso, 2, &[self.packet_type]),
            0x86 if need(4) => {
                self.pll_steps = u32::from_be_bytes([args[0], args[1], args[2], args[3]])
            }
            0x8E if need(2) => self.tx_power_param = args[0] as i8,
            0x95 if need(4) => self.pa_config.copy_from_slice(&args[..3]),
            0x88 if need(7) => {}
            0x8F if need(2) => {
                self.tx_base = args[0];
                self.rx_base = args[1];
            }
            0x8B if need(4) => {
                let valid = (5..=12).contains(&args[0]) && (1..=4).contains(&args[2]) && {
                    let old = self.mod_params[1];
                    self.mod_params[1] = args[1];
                    let v = self.bandwidth_hz().is_some();
                    self.mod_params[1] = old;
                    v
                };
                if valid {
                    self.mod_params.copy_from_slice(&args[..4]);
                } else {
                    ok = false;
                }
            }
            0x8C if need(6) => {
                self.preamble = u16::from_be_bytes([args[0], args[1]]);
                self.implicit_header = args[2] == 1;
                self.payload_len = args[3];
                self.crc_on = args[4] == 1;
                self.iq_inverted = args[5] == 1;
            }
            0x13 => put(&mut miso, 2, &[self.rx_len, self.rx_start]),
            0x14 => put(&mut miso, 2, &self.packet_status),
            0x15 => put(&mut miso, 2, &[self.packet_status[0]]),
            0x10 => put(&mut miso, 2, &[0; 6]),
            0x00 => {} // ResetStats
            0x08 if need(8) => {
                self.irq_mask = u16::from_be_bytes([args[0], args[1]]);
                self.dio1_mask = u16::from_be_bytes([args[2], args[3]]);
            }
            0x12 => put(&mut miso, 2, &self.irq.to_be_bytes()),
            0x02 if need(2) => self.irq &= !u16::from_be_bytes([args[0], args[1]]),
            0x89 if need(1) => {}
            0x98 if need(2) => {}
            0x96 if need(1) => {}
            0x17 => put(&mut miso, 2, &[0, 0]),
            0x07 => {}
            0x97 if need(4) => {}
            0x93 if need(1) => {}
            0x9D if need(1) => {}
            0x9F if need(1) => {}
            0xA0 if need(1) => self.symbol_timeout = args[0],
            0x0D if need(3) => {
                let addr = usize::from(u16::from_be_bytes([args[0], args[1]]));
                for (i, &b) in args[2..].iter().enumerate() {
                    if let Some(r) = self.regs.get_mut(addr + i) {
                        *r = b;
                    }
                }
            }
            0x1D if need(2) => {
                let addr = usize::from(u16::from_be_bytes([args[0], args[1]]));
                // opcode, two address bytes, a status byte, then data
                let data: Vec<u8> = (0..mosi.len().saturating_sub(4))
                    .map(|i| self.regs.get(addr + i).copied().unwrap_or(0))
                    .collect();
                put(&mut miso, 4, &data);
            }
            0x0E if need(1) => {
                let offset = args[0];
                for (i, &b) in args[1..].iter().enumerate() {
                    self.buffer[usize::from(offset.wrapping_add(i as u8))] = b;
                }
            }
            0x1E if need(1) => {
                let offset = args[0];
                let data: Vec<u8> = (0..mosi.len().saturating_sub(3))
                    .map(|i| self.buffer[usize::from(offset.wrapping_add(i as u8))])
                    .collect();
                put(&mut miso, 3, &data);
            }
            _ => {
                tracing::warn!(
                    opcode = format_args!("{op:#04x}"),
                    len = mosi.len(),
                    "emulated SX1262: unknown or ill-formed command"
                );
                unknown = true;
            }
        }
        if unknown || !ok {
            self.errors += 1;
            self.cmd_status = if unknown {
                STATUS_PROCESSING_ERROR
            } else {
                STATUS_EXECUTION_FAILURE
            };
        } else if !matches!(
            op,
            0xC0 | 0x12 | 0x13 | 0x14 | 0x15 | 0x10 | 0x11 | 0x17 | 0x1D | 0x1E
        ) {
            // a successful set-command clears a stale error; getters leave the status for reading
            self.cmd_status = 0;
        }
        miso
    }

    fn start_tx(
        &mut self,
        now: Instant,
        port: Option<&Arc<dyn AirPort>>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        if self.packet_type != 1 {
            tracing::warn!("emulated SX1262: SetTx with a packet type other than LoRa");
            return false;
        }
        self.leave_rx(effects);
        let m = self.modulation();
        let payload: Vec<u8> = (0..self.payload_len)
            .map(|i| self.buffer[usize::from(self.tx_base.wrapping_add(i))])
            .collect();
        let end = now + toa::time_on_air(&m, payload.len());
        self.mode = Mode::Tx { end };
        if port.is_some() {
            effects.push(Effect::Transmit(Transmission {
                modulation: m,
                power_dbm: self.output_power_dbm(),
                payload,
            }));
        }
        true
    }

    fn start_rx(&mut self, timeout_steps: u32, now: Instant, effects: &mut Vec<Effect>) -> bool {
        if self.packet_type != 1 {
            tracing::warn!("emulated SX1262: SetRx with a packet type other than LoRa");
            return false;
        }
        let m = self.modulation();
        let symbol = Duration::from_nanos((toa::symbol_us(&m) * 1000.0) as u64);
        let (deadline, single) = match timeout_steps {
            0xFF_FFFF => (None, false),
            // single mode ends after the LoRa symbol timeout if no preamble is found (0 = never)
            0 => (
                (self.symbol_timeout > 0).then(|| now + symbol * u32::from(self.symbol_timeout)),
                true,
            ),
            // one step is 15.625 us
            t => (
                Some(now + Duration::from_nanos(u64::from(t) * 15_625)),
                true,
            ),
        };
        self.mode = Mode::Rx { deadline, single };
        if self.tuned != Some(m) {
            self.tuned = Some(m);
            effects.push(Effect::Listen(Some(m)));
        }
        true
    }

    fn start_cad(
        &mut self,
        now: Instant,
        port: Option<&Arc<dyn AirPort>>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        self.leave_rx(effects);
        let m = self.modulation();
        let end = now + Duration::from_nanos((toa::symbol_us(&m) * 8_000.0) as u64);
        // the air is sampled when CAD starts
        let detected = port.is_some_and(|p| p.channel_active(&m));
        self.mode = Mode::Cad { end, detected };
        true
    }

    fn deliver(&mut self, r: &Reception) -> bool {
        let Mode::Rx { single, .. } = self.mode else {
            return false;
        };
        if self.in_reset || self.tuned != Some(r.modulation) {
            return false;
        }
        match r.verdict {
            Verdict::Heard | Verdict::CrcError => {
                let len = r.payload.len().min(255) as u8;
                for (i, &b) in r.payload.iter().take(255).enumerate() {
                    self.buffer[usize::from(self.rx_base.wrapping_add(i as u8))] = b;
                }
                self.rx_len = len;
                self.rx_start = self.rx_base;
                // RssiPkt is signal plus noise (so it bottoms out near the noise floor);
                // SignalRssiPkt estimates the signal alone.
                let noise_dbm = r.rssi_dbm - r.snr_db;
                let total_dbm =
                    10.0 * (10f64.powf(r.rssi_dbm / 10.0) + 10f64.powf(noise_dbm / 10.0)).log10();
                let encode = |dbm: f64| (-2.0 * dbm).clamp(0.0, 255.0) as u8;
                // LoRa demodulators saturate around +15 dB SNR; lora-phy 3.0.1 also overflows an i8
                // (a panic in debug builds) on raw values of 126 and above.
                let snr = (4.0 * r.snr_db.clamp(-32.0, 15.0)) as i8;
                self.packet_status = [encode(total_dbm), snr as u8, encode(r.rssi_dbm)];
                let crc = if r.verdict == Verdict::CrcError {
                    irq::CRC_ERR
                } else {
                    0
                };
                self.raise(irq::PREAMBLE_DETECTED | irq::HEADER_VALID | irq::RX_DONE | crc);
                self.cmd_status = STATUS_DATA_AVAILABLE;
                if single {
                    self.mode = Mode::StandbyRc;
                    self.tuned = None;
                }
            }
            Verdict::HeaderError => self.raise(irq::PREAMBLE_DETECTED | irq::HEADER_ERR),
            _ => return false,
        }
        true
    }
}

fn put(miso: &mut [u8], at: usize, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        if let Some(slot) = miso.get_mut(at + i) {
            *slot = b;
        }
    }
}

struct Chip {
    state: Mutex<State>,
    port: Mutex<Option<Arc<dyn AirPort>>>,
    wake: Notify,
}

impl Chip {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn port(&self) -> Option<Arc<dyn AirPort>> {
        self.port.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn run(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        if let Some(port) = self.port() {
            for e in effects {
                match e {
                    Effect::Transmit(tx) => port.transmit(tx),
                    Effect::Listen(m) => port.listen(m),
                }
            }
        }
    }

    /// Waits until `line` is at `high`, applying timed events as they fall due.
    async fn wait_level(&self, line: Line, high: bool) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut effects = Vec::new();
            let (level, next) = {
                let mut st = self.lock();
                st.advance(Instant::now(), &mut effects);
                let level = match line {
                    Line::Busy => st.busy(),
                    Line::Dio1 => st.dio1(),
                };
                (level, st.next_event())
            };
            self.run(effects);
            if level == high {
                return;
            }
            match next {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

impl ReceptionSink for Chip {
    fn deliver(&self, reception: Reception) {
        let took = self.lock().deliver(&reception);
        if took {
            self.wake.notify_waiters();
        }
    }
}

/// An emulated SX1262. Clones share the chip.
#[derive(Clone)]
pub struct Sx126xEmulator {
    chip: Arc<Chip>,
}

impl Sx126xEmulator {
    /// A chip just powered on, with `fault` injected (`Fault::None` for a healthy one).
    pub fn new(fault: Fault) -> Self {
        Self {
            chip: Arc::new(Chip {
                state: Mutex::new(State::power_on(fault)),
                port: Mutex::new(None),
                wake: Notify::new(),
            }),
        }
    }

    /// Connects the antenna.
    pub fn attach(&self, port: Arc<dyn AirPort>) {
        *self.chip.port.lock().unwrap_or_else(|p| p.into_inner()) = Some(port);
    }

    /// Where the air delivers frames for this chip.
    pub fn sink(&self) -> Arc<dyn ReceptionSink> {
        self.chip.clone()
    }

    /// SPI device and pins, to hand to lora-phy.
    pub fn hal(&self) -> EmulatedHal {
        EmulatedHal {
            spi: EmuSpi {
                chip: self.chip.clone(),
            },
            reset: EmuPin {
                chip: Some(self.chip.clone()),
            },
            busy: EmuLine {
                chip: self.chip.clone(),
                line: Line::Busy,
            },
            dio1: EmuLine {
                chip: self.chip.clone(),
                line: Line::Dio1,
            },
        }
    }

    /// Commands the chip rejected since power-on (unknown, ill-formed or not executable).
    pub fn command_errors(&self) -> u64 {
        self.chip.lock().errors
    }

    /// Raw SPI access for tests of the command layer: returns the MISO bytes.
    pub fn spi_exchange(&self, mosi: &[u8]) -> Vec<u8> {
        let mut effects = Vec::new();
        let port = self.chip.port();
        let miso = self
            .chip
            .lock()
            .execute(mosi, Instant::now(), port.as_ref(), &mut effects);
        self.chip.run(effects);
        self.chip.wake.notify_waiters();
        miso
    }
}

/// The emulator's side of lora-phy's `Sx126x` and `GenericSx126xInterfaceVariant`.
pub struct EmulatedHal {
    /// The SPI device.
    pub spi: EmuSpi,
    /// NRESET (output, active low).
    pub reset: EmuPin,
    /// BUSY (input).
    pub busy: EmuLine,
    /// DIO1, the interrupt line (input).
    pub dio1: EmuLine,
}

/// SPI device of an emulated chip.
pub struct EmuSpi {
    chip: Arc<Chip>,
}

impl embedded_hal_async::spi::ErrorType for EmuSpi {
    type Error = Infallible;
}

impl embedded_hal_async::spi::SpiDevice for EmuSpi {
    async fn transaction(
        &mut self,
        operations: &mut [embedded_hal_async::spi::Operation<'_, u8>],
    ) -> Result<(), Infallible> {
        use embedded_hal_async::spi::Operation;
        let mut mosi = Vec::with_capacity(16);
        for op in operations.iter() {
            match op {
                Operation::Write(w) => mosi.extend_from_slice(w),
                Operation::Read(r) => mosi.extend(std::iter::repeat_n(0u8, r.len())),
                Operation::Transfer(r, w) => {
                    mosi.extend_from_slice(w);
                    mosi.extend(std::iter::repeat_n(0u8, r.len().saturating_sub(w.len())));
                }
                Operation::TransferInPlace(b) => mosi.extend_from_slice(b),
                Operation::DelayNs(_) => {}
            }
        }
        let port = self.chip.port();
        let mut effects = Vec::new();
        let miso = self
            .chip
            .lock()
            .execute(&mosi, Instant::now(), port.as_ref(), &mut effects);
        self.chip.run(effects);
        self.chip.wake.notify_waiters();
        let mut at = 0;
        for op in operations.iter_mut() {
            match op {
                Operation::Write(w) => at += w.len(),
                Operation::Read(r) => {
                    r.copy_from_slice(&miso[at..at + r.len()]);
                    at += r.len();
                }
                Operation::Transfer(r, w) => {
                    let n = r.len().max(w.len());
                    let k = r.len();
                    r.copy_from_slice(&miso[at..at + k]);
                    at += n;
                }
                Operation::TransferInPlace(b) => {
                    let k = b.len();
                    b.copy_from_slice(&miso[at..at + k]);
                    at += k;
                }
                Operation::DelayNs(ns) => {
                    tokio::time::sleep(Duration::from_nanos(u64::from(*ns))).await
                }
            }
        }
        Ok(())
    }
}

/// NRESET (or an RF-switch pin, which the emulator ignores).
pub struct EmuPin {
    chip: Option<Arc<Chip>>,
}

impl EmuPin {
    /// A pin wired to nothing, e.g. an RF switch the emulator does not need.
    pub fn unconnected() -> Self {
        Self { chip: None }
    }
}

impl embedded_hal::digital::ErrorType for EmuPin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for EmuPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        if let Some(chip) = &self.chip {
            let mut effects = Vec::new();
            {
                let mut st = chip.lock();
                st.leave_rx(&mut effects);
                st.in_reset = true;
            }
            chip.run(effects);
        }
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        if let Some(chip) = &self.chip {
            let mut st = chip.lock();
            if st.in_reset {
                let fault = st.fault;
                *st = State::power_on(fault);
                st.busy_until = Some(Instant::now() + RESET_BUSY);
            }
            drop(st);
            chip.wake.notify_waiters();
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Busy,
    Dio1,
}

/// BUSY or DIO1 of an emulated chip.
pub struct EmuLine {
    chip: Arc<Chip>,
    line: Line,
}

impl embedded_hal::digital::ErrorType for EmuLine {
    type Error = Infallible;
}

impl embedded_hal_async::digital::Wait for EmuLine {
    async fn wait_for_high(&mut self) -> Result<(), Infallible> {
        self.chip.wait_level(self.line, true).await;
        Ok(())
    }
    async fn wait_for_low(&mut self) -> Result<(), Infallible> {
        self.chip.wait_level(self.line, false).await;
        Ok(())
    }
    async fn wait_for_rising_edge(&mut self) -> Result<(), Infallible> {
        self.chip.wait_level(self.line, false).await;
        self.chip.wait_level(self.line, true).await;
        Ok(())
    }
    async fn wait_for_falling_edge(&mut self) -> Result<(), Infallible> {
        self.chip.wait_level(self.line, true).await;
        self.chip.wait_level(self.line, false).await;
        Ok(())
    }
    async fn wait_for_any_edge(&mut self) -> Result<(), Infallible> {
        let start = self.chip.lock().dio1();
        self.chip.wait_level(self.line, !start).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sync_word_reads_back_its_reset_value() {
        let emu = Sx126xEmulator::new(Fault::None);
        let miso = emu.spi_exchange(&[0x1D, 0x07, 0x40, 0x00, 0x00, 0x00]);
        assert_eq!(&miso[4..], &[0x14, 0x24]);
    }

    #[tokio::test(start_paused = true)]
    async fn absent_chip_reads_all_ones() {
        let emu = Sx126xEmulator::new(Fault::Absent);
        let miso = emu.spi_exchange(&[0x1D, 0x07, 0x40, 0x00, 0x00, 0x00]);
        assert!(miso.iter().all(|&b| b == 0xFF));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_and_short_commands_report_a_processing_error() {
        let emu = Sx126xEmulator::new(Fault::None);
        for bad in [
            &[0x42u8][..],
            &[0x8B, 0x07][..],
            &[0x8B, 0x0D, 0x04, 0x01, 0x00][..],
        ] {
            emu.spi_exchange(bad);
            let status = emu.spi_exchange(&[0xC0, 0x00])[1];
            let cmd = (status >> 1) & 0x7;
            assert!(
                cmd == STATUS_PROCESSING_ERROR || cmd == STATUS_EXECUTION_FAILURE,
                "{bad:02x?} gave status {status:#04x}"
            );
            // a good command clears it
            emu.spi_exchange(&[0x80, 0x00]);
            assert_eq!((emu.spi_exchange(&[0xC0, 0x00])[1] >> 1) & 0x7, 0);
        }
        assert_eq!(emu.command_errors(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn buffer_and_registers_round_trip() {
        let emu = Sx126xEmulator::new(Fault::None);
        emu.spi_exchange(&[0x0E, 0xFE, 1, 2, 3]); // wraps past 0xFF
        assert_eq!(
            &emu.spi_exchange(&[0x1E, 0xFE, 0, 0, 0, 0])[3..],
            &[1, 2, 3]
        );
        emu.spi_exchange(&[0x0D, 0x08, 0xAC, 0x96]);
        assert_eq!(emu.spi_exchange(&[0x1D, 0x08, 0xAC, 0, 0])[4], 0x96);
    }

    #[test]
    fn pa_settings_give_the_datasheet_output_power() {
        let mut st = State::power_on(Fault::None);
        // (paDutyCycle, hpMax, power byte) -> dBm, as lora-phy programs an SX1262
        for (duty, hp, power, dbm) in [
            (4, 7, 22, 22.0),
            (3, 5, 22, 20.0),
            (2, 3, 22, 17.0),
            (2, 2, 22, 14.0),
            (2, 2, 10, 2.0),
        ] {
            st.pa_config = [duty, hp, 0];
            st.tx_power_param = power;
            assert_eq!(st.output_power_dbm(), dbm);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tx_done_rises_after_time_on_air() {
        let emu = Sx126xEmulator::new(Fault::None);
        let mut hal = emu.hal();
        emu.spi_exchange(&[0x8A, 0x01]); // LoRa
        emu.spi_exchange(&[0x8B, 0x07, 0x04, 0x01, 0x00]); // SF7 BW125 CR4/5
        emu.spi_exchange(&[0x8C, 0x00, 0x08, 0x00, 24, 0x01, 0x00]);
        emu.spi_exchange(&[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        let t0 = Instant::now();
        emu.spi_exchange(&[0x83, 0, 0, 0]);
        embedded_hal_async::digital::Wait::wait_for_high(&mut hal.dio1)
            .await
            .unwrap();
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        // tokio timers have millisecond resolution: 61.7 ms fires at 62 ms
        assert!((61.6..=62.7).contains(&took), "{took}");
        assert_eq!(emu.spi_exchange(&[0x12, 0, 0, 0])[3], irq::TX_DONE as u8);
    }
}

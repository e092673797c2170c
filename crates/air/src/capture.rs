//! Packet capture of the simulated air: one JSON line per frame, with every receiver's fate.

use crate::reception::Verdict;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// One frame on the air and what each listening radio made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Start of the frame, seconds since the air was created.
    pub t_s: f64,
    /// Name of the transmitting radio.
    pub from: String,
    /// Carrier frequency in Hz.
    pub frequency_hz: u32,
    /// Spreading factor, 7..=12.
    pub spreading_factor: u8,
    /// Bandwidth in Hz.
    pub bandwidth_hz: u32,
    /// Transmit power in dBm.
    pub power_dbm: f64,
    /// Time on air in milliseconds.
    pub airtime_ms: f64,
    /// The frame's bytes, lower-case hex in JSON.
    #[serde(with = "hex_bytes")]
    pub phy_payload: Vec<u8>,
    /// Radios that were listening or transmitting during the frame; idle radios are left out.
    pub receivers: Vec<ReceiverRecord>,
}

/// One receiver's view of one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiverRecord {
    /// Name of the receiving radio.
    pub node: String,
    /// `heard`, or why not.
    pub verdict: Verdict,
    /// Received power at this radio, in dBm.
    pub rssi_dbm: f64,
    /// SNR over thermal noise, in dB.
    pub snr_db: f64,
}

/// Writes `TxRecord`s as JSON lines.
pub struct CaptureWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    /// Flush every line, so a long-running air can be followed with `tail -f`.
    live: bool,
}

impl CaptureWriter {
    /// A buffered capture file, for simulations that end.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(Box::new(File::create(path)?), false))
    }

    /// A capture file flushed after every frame, for an air that runs until it is stopped.
    pub fn create_live(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(Box::new(File::create(path)?), true))
    }

    /// A capture to any writer; `live` flushes after every frame.
    pub fn new(out: Box<dyn Write + Send>, live: bool) -> Self {
        Self {
            out: BufWriter::new(out),
            live,
        }
    }

    /// Appends one frame as a JSON line.
    pub fn write(&mut self, record: &TxRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        if self.live {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Writes out anything buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Lower-case hex for payloads, as packet tools print them.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Bytes as lower-case hex, two digits each.
    pub fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Hex (either case) back to bytes; an odd length or a non-hex pair is an error.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        if !s.len().is_multiple_of(2) {
            return Err(format!("odd-length hex string of {} characters", s.len()));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("not hex at offset {i}"))
            })
            .collect()
    }

    /// Serde: bytes as a hex string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    /// Serde: a hex string as bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let b = vec![0x00, 0x40, 0xff, 0x12];
        assert_eq!(hex_bytes::encode(&b), "0040ff12");
        assert_eq!(hex_bytes::decode("0040ff12"), Ok(b));
        assert!(hex_bytes::decode("abc").is_err());
        assert!(hex_bytes::decode("zz").is_err());
    }

    #[test]
    fn record_is_one_json_line() {
        let rec = TxRecord {
            t_s: 1.5,
            from: "m1".into(),
            frequency_hz: 865_062_500,
            spreading_factor: 7,
            bandwidth_hz: 125_000,
            power_dbm: 14.0,
            airtime_ms: 61.7,
            phy_payload: vec![0x40, 1, 2],
            receivers: vec![ReceiverRecord {
                node: "gw".into(),
                verdict: Verdict::Collision,
                rssi_dbm: -100.0,
                snr_db: 17.0,
            }],
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.contains("\"phy_payload\":\"400102\""));
        assert!(line.contains("\"verdict\":\"collision\""));
        let back: TxRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, rec);
    }
}

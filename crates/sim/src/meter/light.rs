//! A light radio for big simulated fleets: the same `Air` (path loss, capture, half duplex,
//! sensitivity) and the same time on air as the emulated SX1262, without lora-phy and the SPI-level
//! chip emulation behind it. Like meter firmware reading the DevAddr first, it drops frames
//! addressed to other meters before waking its task.

use gramgrid_air::air::{
    Air, AirPort, NodePort, NodeSpec, Reception, ReceptionSink, Transmission, Verdict,
};
use gramgrid_proto::frame::DevAddr;
use gramgrid_radio::{toa, Radio, RadioConfig, RadioError, RxFrame};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Inbox {
    tx: mpsc::UnboundedSender<Reception>,
    dev_addr: Option<[u8; 4]>,
}

impl ReceptionSink for Inbox {
    fn deliver(&self, reception: Reception) {
        if let Some(addr) = self.dev_addr {
            // MHDR, then DevAddr little-endian: a frame for someone else is not worth a wake-up.
            if reception.payload.get(1..5) != Some(&addr[..]) {
                return;
            }
        }
        let _ = self.tx.send(reception);
    }
}

/// A radio on the in-process air without a chip emulator behind it.
pub struct LightRadio {
    port: NodePort,
    config: RadioConfig,
    inbox: mpsc::UnboundedReceiver<Reception>,
}

impl LightRadio {
    /// Puts a light radio at `spec` on `air`; with `dev_addr`, it hears only frames for that address.
    pub fn attach(air: &Air, spec: NodeSpec, dev_addr: Option<DevAddr>) -> Self {
        let (tx, inbox) = mpsc::unbounded_channel();
        let sink = Arc::new(Inbox {
            tx,
            dev_addr: dev_addr.map(|a| a.to_air_bytes()),
        });
        Self {
            port: air.attach(spec, sink),
            config: RadioConfig::default(),
            inbox,
        }
    }
}

impl Radio for LightRadio {
    async fn configure(&mut self, config: RadioConfig) -> Result<(), RadioError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    async fn transmit(&mut self, payload: &[u8]) -> Result<Duration, RadioError> {
        if payload.len() > 255 {
            return Err(RadioError::PayloadTooLong(payload.len()));
        }
        let modulation = self.config.modulation(true);
        let airtime = toa::time_on_air(&modulation, payload.len());
        self.port.transmit(Transmission {
            modulation,
            power_dbm: f64::from(self.config.tx_power_dbm),
            payload: payload.to_vec(),
        });
        tokio::time::sleep(airtime).await;
        Ok(airtime)
    }

    async fn receive(&mut self, within: Duration) -> Result<RxFrame, RadioError> {
        let modulation = self.config.modulation(false);
        self.port.listen(Some(modulation));
        let reception = tokio::time::timeout(within, self.inbox.recv())
            .await
            .map_err(|_| RadioError::Timeout(within))?
            .ok_or(RadioError::Io("the air is gone".into()))?;
        match reception.verdict {
            Verdict::CrcError => Err(RadioError::Crc {
                rssi_dbm: reception.rssi_dbm.round() as i16,
                snr_db: reception.snr_db.round() as i16,
            }),
            Verdict::HeaderError => Err(RadioError::Header),
            _ => Ok(RxFrame {
                payload: reception.payload,
                rssi_dbm: reception.rssi_dbm.round() as i16,
                snr_db: reception.snr_db.round() as i16,
                received_at: Instant::now(),
                spreading_factor: reception.modulation.spreading_factor,
                frequency_hz: reception.modulation.frequency_hz,
            }),
        }
    }
}

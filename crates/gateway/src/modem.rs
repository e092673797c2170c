//! SMS through the gateway's cellular modem, via ModemManager over D-Bus, for when the data backhaul is down.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, DBusError, Proxy};

/// ModemManager's well-known bus name.
pub const SERVICE: &str = "org.freedesktop.ModemManager1";
/// The object path of ModemManager's `org.freedesktop.DBus.ObjectManager`.
pub const MANAGER_PATH: &str = "/org/freedesktop/ModemManager1";
/// The prefix of modem object paths (`.../Modem/N`).
pub const MODEM_PATH_PREFIX: &str = "/org/freedesktop/ModemManager1/Modem/";
/// A modem's SMS interface (create, list and delete messages).
pub const MESSAGING_INTERFACE: &str = "org.freedesktop.ModemManager1.Modem.Messaging";
/// An SMS object's interface.
pub const SMS_INTERFACE: &str = "org.freedesktop.ModemManager1.Sms";
/// `MMSmsState` of a message that has been received completely.
pub const SMS_STATE_RECEIVED: u32 = 3;
/// `MMSmsState` of a message that has been sent.
pub const SMS_STATE_SENT: u32 = 5;

const OBJECT_MANAGER_INTERFACE: &str = "org.freedesktop.DBus.ObjectManager";

/// Something that sends an SMS. Object safe, so the gateway can hold an `Arc<dyn SmsModem>`.
pub trait SmsModem: Send + Sync {
    /// Sends `text` to `number` (international format, e.g. `+919812345678`). Resolves once the
    /// modem reports the message sent.
    fn send<'a>(
        &'a self,
        number: &'a str,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ModemError>> + Send + 'a>>;
}

/// Why an SMS could not be sent or read. The messages say what an operator should check; they
/// never contain the phone number or the text.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    /// The D-Bus connection itself failed.
    #[error(
        "cannot connect to D-Bus at {bus}: {source}; check that the D-Bus daemon is running \
         (`systemctl status dbus`) and that the gateway's user may use the system bus"
    )]
    Connect {
        /// The bus that was tried.
        bus: BusAddress,
        /// What zbus reported.
        #[source]
        source: zbus::Error,
    },
    /// Nobody owns `org.freedesktop.ModemManager1` on the bus.
    #[error(
        "ModemManager is not running on {bus} ({name}); check `systemctl status ModemManager` \
         and `mmcli -L`"
    )]
    NoModemManager {
        /// The bus that was asked.
        bus: BusAddress,
        /// The D-Bus error name the bus answered with.
        name: String,
    },
    /// ModemManager answered but lists no modem that can send SMS.
    #[error(
        "ModemManager lists no modem with SMS support; check that the modem is plugged in, \
         powered and enabled and that its SIM is in (`mmcli -L`, then `mmcli -m 0`)"
    )]
    NoModem,
    /// ModemManager refused a call (the SMS could not be created or sent, for example).
    #[error(
        "ModemManager refused {step}: {name}: {message}; check the modem's state, signal and \
         SIM credit (`mmcli -m 0`)"
    )]
    Refused {
        /// Which call was refused, e.g. `Sms.Send`.
        step: &'static str,
        /// The D-Bus error name, e.g. `org.freedesktop.ModemManager1.Error.Core.Failed`.
        name: String,
        /// The error message ModemManager gave.
        message: String,
    },
    /// `Sms.Send` returned but the message is not in state SENT.
    #[error(
        "the SMS ended in state {state} ({}) instead of sent (5); check signal and SIM credit \
         (`mmcli -m 0`)",
        sms_state_name(*state)
    )]
    NotSent {
        /// The `MMSmsState` read after `Send` returned.
        state: u32,
    },
    /// A call got no answer in time.
    #[error(
        "{step} got no answer from ModemManager within {}; the modem or ModemManager may be \
         hung: check `mmcli -m 0` and `journalctl -u ModemManager`",
        humantime_serde::re::humantime::format_duration(*after)
    )]
    Timeout {
        /// Which call timed out.
        step: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// Any other D-Bus failure: an unexpected reply or a broken connection.
    #[error(
        "D-Bus failure during {step}: {source}; check that the installed ModemManager is a \
         1.x release and `journalctl -u ModemManager`"
    )]
    Bus {
        /// Which call failed.
        step: &'static str,
        /// What zbus reported.
        #[source]
        source: zbus::Error,
    },
}

/// The names ModemManager gives `MMSmsState` values.
fn sms_state_name(state: u32) -> &'static str {
    match state {
        0 => "unknown",
        1 => "stored",
        2 => "receiving",
        3 => "received",
        4 => "sending",
        5 => "sent",
        _ => "not a known state",
    }
}

/// Which D-Bus bus ModemManager is on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BusAddress {
    /// The system bus, where ModemManager runs in production.
    #[default]
    System,
    /// An explicit D-Bus address, e.g. `unix:path=/tmp/x/bus` (a private bus in tests).
    Address(String),
}

impl fmt::Display for BusAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusAddress::System => f.write_str("the system bus"),
            BusAddress::Address(address) => write!(f, "bus {address}"),
        }
    }
}

/// `[modem]`: SMS through the cellular modem when the data backhaul is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModemConfig {
    /// Whether the gateway may send SMS through its modem at all.
    pub enabled: bool,
    /// The D-Bus address ModemManager is on; absent means the system bus (production).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// How long the data backhaul must have been down before messages go by SMS instead.
    #[serde(with = "humantime_serde")]
    pub send_after_backhaul_down: Duration,
}

impl Default for ModemConfig {
    fn default() -> Self {
        ModemConfig {
            enabled: false,
            bus: None,
            send_after_backhaul_down: Duration::from_secs(30 * 60),
        }
    }
}

impl ModemConfig {
    /// The bus this config names.
    pub fn bus_address(&self) -> BusAddress {
        match &self.bus {
            None => BusAddress::System,
            Some(address) => BusAddress::Address(address.clone()),
        }
    }
}

/// A message read from the modem's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSms {
    /// The sender's number as the network gave it.
    pub number: String,
    /// The text.
    pub text: String,
}

/// The SMS client over ModemManager's documented D-Bus API (`org.freedesktop.ModemManager1`).
///
/// Sending finds the first modem with the `Modem.Messaging` interface through the
/// `ObjectManager`, creates the SMS (`Messaging.Create`), sends it (`Sms.Send`), checks that its
/// `State` is `MM_SMS_STATE_SENT` and deletes it from the modem's storage (`Messaging.Delete`),
/// whether it went or not. Every D-Bus call is bounded by a timeout.
#[derive(Debug, Clone)]
pub struct ModemManager {
    connection: Connection,
    bus: BusAddress,
    call_timeout: Duration,
    send_timeout: Duration,
}

/// How long an ordinary call may take (D-Bus's own default).
const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// How long `Sms.Send` may take: ModemManager answers only once the network has taken the message.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

impl ModemManager {
    /// Connects to `bus`. It does not check that ModemManager is there; [`SmsModem::send`] does.
    pub async fn connect(bus: &BusAddress) -> Result<ModemManager, ModemError> {
        let connecting = async {
            let builder = match bus {
                BusAddress::System => zbus::connection::Builder::system()?,
                BusAddress::Address(address) => {
                    zbus::connection::Builder::address(address.as_str())?
                }
            };
            builder.method_timeout(SEND_TIMEOUT).build().await
        };
        let connection = match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(source)) => {
                return Err(ModemError::Connect {
                    bus: bus.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(ModemError::Timeout {
                    step: "connecting to D-Bus",
                    after: CALL_TIMEOUT,
                })
            }
        };
        Ok(ModemManager {
            connection,
            bus: bus.clone(),
            call_timeout: CALL_TIMEOUT,
            send_timeout: SEND_TIMEOUT,
        })
    }

    /// Sets the timeouts: `call` for every call but `Sms.Send`, `send` for `Sms.Send` (defaults
    /// 25 s and 120 s).
    pub fn with_timeouts(mut self, call: Duration, send: Duration) -> ModemManager {
        self.call_timeout = call;
        self.send_timeout = send;
        self
    }

    /// Reads the messages the modem has received completely, and deletes each from the modem's
    /// storage once read (a message whose delete fails is still returned, and read again next
    /// time). Messages still arriving and the gateway's own outgoing ones are left alone.
    pub async fn received(&self) -> Result<Vec<ReceivedSms>, ModemError> {
        let modem = self.first_modem().await?;
        let messaging = self.proxy(modem.as_str(), MESSAGING_INTERFACE).await?;
        let paths: Vec<OwnedObjectPath> = self
            .bounded(
                "Messaging.List",
                self.call_timeout,
                messaging.call("List", &()),
            )
            .await?;
        let mut received = Vec::new();
        for path in paths {
            let sms = self.proxy(path.as_str(), SMS_INTERFACE).await?;
            let state: u32 = self
                .bounded(
                    "reading Sms.State",
                    self.call_timeout,
                    sms.get_property("State"),
                )
                .await?;
            if state != SMS_STATE_RECEIVED {
                continue;
            }
            let number: String = self
                .bounded(
                    "reading Sms.Number",
                    self.call_timeout,
                    sms.get_property("Number"),
                )
                .await?;
            let text: String = self
                .bounded(
                    "reading Sms.Text",
                    self.call_timeout,
                    sms.get_property("Text"),
                )
                .await?;
            self.delete(&messaging, &path).await;
            received.push(ReceivedSms { number, text });
        }
        Ok(received)
    }

    async fn send_sms(&self, number: &str, text: &str) -> Result<(), ModemError> {
        let modem = self.first_modem().await?;
        let messaging = self.proxy(modem.as_str(), MESSAGING_INTERFACE).await?;
        let properties: HashMap<&str, Value<'_>> =
            HashMap::from([("number", Value::from(number)), ("text", Value::from(text))]);
        let path: OwnedObjectPath = self
            .bounded(
                "Messaging.Create",
                self.call_timeout,
                messaging.call("Create", &(properties,)),
            )
            .await?;
        let outcome = self.send_created(&path).await;
        // Whatever happened, the message must not stay in the modem's small storage.
        self.delete(&messaging, &path).await;
        outcome
    }

    async fn send_created(&self, path: &OwnedObjectPath) -> Result<(), ModemError> {
        let sms = self.proxy(path.as_str(), SMS_INTERFACE).await?;
        self.bounded::<()>("Sms.Send", self.send_timeout, sms.call("Send", &()))
            .await?;
        let state: u32 = self
            .bounded(
                "reading Sms.State",
                self.call_timeout,
                sms.get_property("State"),
            )
            .await?;
        if state == SMS_STATE_SENT {
            Ok(())
        } else {
            Err(ModemError::NotSent { state })
        }
    }

    /// Deletes an SMS from storage; a failure is logged, not returned (the message was sent, or
    /// its failure is the error worth reporting).
    async fn delete(&self, messaging: &Proxy<'_>, path: &OwnedObjectPath) {
        let body = (path,);
        let deleting = messaging.call::<_, _, ()>("Delete", &body);
        if let Err(e) = self
            .bounded("Messaging.Delete", self.call_timeout, deleting)
            .await
        {
            tracing::warn!(sms = %path.as_str(), error = %e, "could not delete an SMS from the modem's storage");
        }
    }

    /// The first modem (lowest number) that exposes the Messaging interface.
    async fn first_modem(&self) -> Result<OwnedObjectPath, ModemError> {
        let manager = self.proxy(MANAGER_PATH, OBJECT_MANAGER_INTERFACE).await?;
        let objects: HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>> = self
            .bounded(
                "ObjectManager.GetManagedObjects",
                self.call_timeout,
                manager.call("GetManagedObjects", &()),
            )
            .await?;
        objects
            .into_iter()
            .filter_map(|(path, interfaces)| {
                let number: u64 = path
                    .as_str()
                    .strip_prefix(MODEM_PATH_PREFIX)?
                    .parse()
                    .ok()?;
                interfaces
                    .contains_key(MESSAGING_INTERFACE)
                    .then_some((number, path))
            })
            .min_by_key(|(number, _)| *number)
            .map(|(_, path)| path)
            .ok_or(ModemError::NoModem)
    }

    async fn proxy<'p>(&self, path: &'p str, interface: &'p str) -> Result<Proxy<'p>, ModemError> {
        let step = "building a D-Bus proxy";
        let bus = |source| ModemError::Bus { step, source };
        zbus::proxy::Builder::new(&self.connection)
            .destination(SERVICE)
            .map_err(bus)?
            .path(path)
            .map_err(bus)?
            .interface(interface)
            .map_err(bus)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus)
    }

    /// Runs one D-Bus call within `after`, mapping its errors to what an operator can act on.
    async fn bounded<T>(
        &self,
        step: &'static str,
        after: Duration,
        call: impl Future<Output = zbus::Result<T>>,
    ) -> Result<T, ModemError> {
        match tokio::time::timeout(after, call).await {
            Err(_) => Err(ModemError::Timeout { step, after }),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(step, e)),
        }
    }

    fn classify(&self, step: &'static str, error: zbus::Error) -> ModemError {
        let (name, message) = match &error {
            zbus::Error::MethodError(name, message, _) => (
                name.as_str().to_owned(),
                message.clone().unwrap_or_default(),
            ),
            zbus::Error::FDO(fdo) => (
                fdo.name().as_str().to_owned(),
                fdo.description().unwrap_or_default().to_owned(),
            ),
            _ => {
                return ModemError::Bus {
                    step,
                    source: error,
                }
            }
        };
        match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => ModemError::NoModemManager {
                bus: self.bus.clone(),
                name,
            },
            _ => ModemError::Refused {
                step,
                name,
                message,
            },
        }
    }
}

impl SmsModem for ModemManager {
    fn send<'a>(
        &'a self,
        number: &'a str,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ModemError>> + Send + 'a>> {
        Box::pin(self.send_sms(number, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        #[serde(default)]
        modem: ModemConfig,
    }

    #[test]
    fn modem_config_defaults_to_off_on_the_system_bus() {
        let config: Wrapper = toml::from_str("").expect("empty config");
        assert_eq!(config.modem, ModemConfig::default());
        assert!(!config.modem.enabled);
        assert_eq!(config.modem.bus_address(), BusAddress::System);
        assert_eq!(
            config.modem.send_after_backhaul_down,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn modem_config_reads_every_option() {
        let config: Wrapper = toml::from_str(
            "[modem]\nenabled = true\nbus = \"unix:path=/run/x/bus\"\nsend_after_backhaul_down = \"2h 5m\"\n",
        )
        .expect("config");
        assert!(config.modem.enabled);
        assert_eq!(
            config.modem.bus_address(),
            BusAddress::Address("unix:path=/run/x/bus".into())
        );
        assert_eq!(
            config.modem.send_after_backhaul_down,
            Duration::from_secs(2 * 3600 + 5 * 60)
        );
        let back: Wrapper = toml::from_str(&format!(
            "[modem]\n{}",
            toml::to_string(&config.modem).expect("serialize")
        ))
        .expect("round trip");
        assert_eq!(back.modem, config.modem);
    }

    #[test]
    fn modem_config_refuses_unknown_options_and_bad_durations() {
        assert!(toml::from_str::<Wrapper>("[modem]\nenable = true\n").is_err());
        assert!(
            toml::from_str::<Wrapper>("[modem]\nsend_after_backhaul_down = \"soon\"\n").is_err()
        );
    }

    #[test]
    fn modem_errors_tell_what_to_check_without_the_number() {
        let e = ModemError::NotSent { state: 1 };
        assert!(e.to_string().contains("stored"), "{e}");
        let e = ModemError::NoModemManager {
            bus: BusAddress::System,
            name: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
        };
        assert!(
            e.to_string().contains("systemctl status ModemManager"),
            "{e}"
        );
    }
}

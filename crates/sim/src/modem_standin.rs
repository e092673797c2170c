//! A ModemManager stand-in on D-Bus (one modem that sends SMS into a list), and a private bus to serve it on.
//!
//! [`ModemStandin`] serves the part of ModemManager's D-Bus API that
//! [`gramgrid_gateway::modem::ModemManager`] uses: the `ObjectManager` at
//! `/org/freedesktop/ModemManager1`, one modem at `/org/freedesktop/ModemManager1/Modem/0` with
//! `Modem.Messaging` (`Create`, `Delete`, `List`, the `Messages` property) and SMS objects at
//! `/org/freedesktop/ModemManager1/SMS/N` with `Sms` (`Send`, `State`, `Number`, `Text`). It
//! records every message sent and can be told to fail sends. [`PrivateBus`] runs a
//! `dbus-daemon` of its own for tests.
use gramgrid_gateway::modem::{MANAGER_PATH, SERVICE, SMS_STATE_RECEIVED, SMS_STATE_SENT};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{interface, Connection, ObjectServer};

/// The path of the stand-in's one modem.
pub const MODEM_PATH: &str = "/org/freedesktop/ModemManager1/Modem/0";
const SMS_PATH_PREFIX: &str = "/org/freedesktop/ModemManager1/SMS/";
/// `MMSmsState` of a message created and not yet sent.
const SMS_STATE_STORED: u32 = 1;

/// A message the stand-in "sent".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    /// The number it was sent to.
    pub number: String,
    /// Its text.
    pub text: String,
}

#[derive(Debug, Default)]
struct Shared {
    sent: Vec<SentSms>,
    fail_next: u32,
    leave_unsent_next: u32,
    next_sms: u32,
    stored: Vec<OwnedObjectPath>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent under a panic in a test, so a poisoned lock is still usable.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ModemManager with one modem, serving on a D-Bus connection for as long as it lives.
#[derive(Debug, Clone)]
pub struct ModemStandin {
    connection: Connection,
    shared: Arc<Mutex<Shared>>,
}

impl ModemStandin {
    /// Serves the modem on `connection` and requests the name `org.freedesktop.ModemManager1`.
    pub async fn serve(connection: &Connection) -> zbus::Result<ModemStandin> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let server = connection.object_server();
        server
            .at(
                MODEM_PATH,
                Messaging {
                    shared: shared.clone(),
                },
            )
            .await?;
        server.at(MANAGER_PATH, zbus::fdo::ObjectManager).await?;
        connection.request_name(SERVICE).await?;
        Ok(ModemStandin {
            connection: connection.clone(),
            shared,
        })
    }

    /// Connects to the bus at `address` and serves there.
    pub async fn start(address: &str) -> zbus::Result<ModemStandin> {
        let connection = zbus::connection::Builder::address(address)?.build().await?;
        ModemStandin::serve(&connection).await
    }

    /// Every message sent so far, in order.
    pub fn sent(&self) -> Vec<SentSms> {
        lock(&self.shared).sent.clone()
    }

    /// The SMS objects in the modem's storage (what `Messaging.List` answers).
    pub fn stored(&self) -> Vec<String> {
        lock(&self.shared)
            .stored
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }

    /// Makes the next `n` calls of `Sms.Send` fail with
    /// `org.freedesktop.ModemManager1.Error.Core.Failed`.
    pub fn fail_next_sends(&self, n: u32) {
        lock(&self.shared).fail_next = n;
    }

    /// Makes the next `n` calls of `Sms.Send` return success but leave the message in state
    /// STORED (1), not SENT, and not record it.
    pub fn leave_next_sends_unsent(&self, n: u32) {
        lock(&self.shared).leave_unsent_next = n;
    }

    /// Puts a received message into the modem's storage, as if it had come from `number`.
    pub async fn deliver(&self, number: &str, text: &str) -> zbus::Result<()> {
        let path = new_sms_path(&self.shared)?;
        self.connection
            .object_server()
            .at(
                &path,
                Sms {
                    shared: self.shared.clone(),
                    number: number.to_owned(),
                    text: text.to_owned(),
                    state: SMS_STATE_RECEIVED,
                },
            )
            .await?;
        lock(&self.shared).stored.push(path.clone());
        let emitter = SignalEmitter::new(&self.connection, MODEM_PATH)?;
        Messaging::added(&emitter, path.as_ref(), true).await?;
        Ok(())
    }
}

fn new_sms_path(shared: &Mutex<Shared>) -> zbus::Result<OwnedObjectPath> {
    let n = {
        let mut shared = lock(shared);
        let n = shared.next_sms;
        shared.next_sms += 1;
        n
    };
    Ok(ObjectPath::try_from(format!("{SMS_PATH_PREFIX}{n}"))?.into())
}

use objects::{Messaging, Sms};

/// The D-Bus objects (the interface macro adds undocumented public signal emitters).
#[allow(missing_docs)]
mod objects {
    use super::*;

    /// ModemManager's errors, under the names ModemManager gives them.
    #[derive(Debug, zbus::DBusError)]
    #[zbus(prefix = "org.freedesktop.ModemManager1.Error.Core")]
    enum CoreError {
        #[zbus(error)]
        ZBus(zbus::Error),
        /// `org.freedesktop.ModemManager1.Error.Core.Failed`.
        Failed(String),
        /// `org.freedesktop.ModemManager1.Error.Core.InvalidArgs`.
        InvalidArgs(String),
        /// `org.freedesktop.ModemManager1.Error.Core.NotFound`.
        NotFound(String),
    }

    pub(super) struct Messaging {
        pub(super) shared: Arc<Mutex<Shared>>,
    }

    fn string_property(
        properties: &HashMap<String, OwnedValue>,
        name: &str,
    ) -> Result<String, CoreError> {
        let value = properties
            .get(name)
            .ok_or_else(|| CoreError::InvalidArgs(format!("missing '{name}'")))?;
        String::try_from(value.clone())
            .map_err(|_| CoreError::InvalidArgs(format!("'{name}' is not a string")))
    }

    #[interface(name = "org.freedesktop.ModemManager1.Modem.Messaging")]
    impl Messaging {
        /// Creates an SMS in storage from `number` and `text`.
        async fn create(
            &mut self,
            properties: HashMap<String, OwnedValue>,
            #[zbus(object_server)] server: &ObjectServer,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> Result<OwnedObjectPath, CoreError> {
            let number = string_property(&properties, "number")?;
            let text = string_property(&properties, "text")?;
            let path = new_sms_path(&self.shared)?;
            server
                .at(
                    &path,
                    Sms {
                        shared: self.shared.clone(),
                        number,
                        text,
                        state: SMS_STATE_STORED,
                    },
                )
                .await?;
            lock(&self.shared).stored.push(path.clone());
            Messaging::added(&emitter, path.as_ref(), false).await?;
            self.messages_changed(&emitter).await?;
            Ok(path)
        }

        /// Deletes an SMS from storage.
        async fn delete(
            &mut self,
            path: OwnedObjectPath,
            #[zbus(object_server)] server: &ObjectServer,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> Result<(), CoreError> {
            let found = {
                let mut shared = lock(&self.shared);
                let before = shared.stored.len();
                shared.stored.retain(|p| p != &path);
                shared.stored.len() != before
            };
            if !found {
                return Err(CoreError::NotFound(format!(
                    "no SMS {} in storage",
                    path.as_str()
                )));
            }
            server.remove::<Sms, _>(&path).await?;
            Messaging::deleted(&emitter, path.as_ref()).await?;
            self.messages_changed(&emitter).await?;
            Ok(())
        }

        /// The SMS objects in storage.
        async fn list(&self) -> Vec<OwnedObjectPath> {
            lock(&self.shared).stored.clone()
        }

        /// A message was created or received.
        #[zbus(signal)]
        pub(super) async fn added(
            emitter: &SignalEmitter<'_>,
            path: ObjectPath<'_>,
            received: bool,
        ) -> zbus::Result<()>;

        /// A message was deleted.
        #[zbus(signal)]
        pub(super) async fn deleted(
            emitter: &SignalEmitter<'_>,
            path: ObjectPath<'_>,
        ) -> zbus::Result<()>;

        /// The SMS objects in storage.
        #[zbus(property)]
        async fn messages(&self) -> Vec<OwnedObjectPath> {
            lock(&self.shared).stored.clone()
        }
    }

    pub(super) struct Sms {
        pub(super) shared: Arc<Mutex<Shared>>,
        pub(super) number: String,
        pub(super) text: String,
        pub(super) state: u32,
    }

    #[interface(name = "org.freedesktop.ModemManager1.Sms")]
    impl Sms {
        /// Sends the message (records it), or fails as told.
        async fn send(
            &mut self,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> Result<(), CoreError> {
            {
                let mut shared = lock(&self.shared);
                if shared.fail_next > 0 {
                    shared.fail_next -= 1;
                    return Err(CoreError::Failed(
                        "Couldn't send SMS part: the network refused it".into(),
                    ));
                }
                if shared.leave_unsent_next > 0 {
                    shared.leave_unsent_next -= 1;
                    return Ok(());
                }
                shared.sent.push(SentSms {
                    number: self.number.clone(),
                    text: self.text.clone(),
                });
            }
            self.state = SMS_STATE_SENT;
            self.state_changed(&emitter).await?;
            Ok(())
        }

        /// `MMSmsState`.
        #[zbus(property)]
        async fn state(&self) -> u32 {
            self.state
        }

        /// The number sent to, or received from.
        #[zbus(property)]
        async fn number(&self) -> String {
            self.number.clone()
        }

        /// The text.
        #[zbus(property)]
        async fn text(&self) -> String {
            self.text.clone()
        }
    }
}

/// Why a private bus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PrivateBusError {
    /// The temporary directory or the config file could not be written.
    #[error("cannot write the private bus's config: {0}")]
    Config(#[source] std::io::Error),
    /// `dbus-daemon` could not be run.
    #[error("cannot run dbus-daemon: {0}; is it installed (Debian package dbus-daemon)?")]
    Spawn(#[source] std::io::Error),
    /// `dbus-daemon` did not print its address.
    #[error("dbus-daemon printed no address within 10 s: {0}")]
    NoAddress(String),
}

/// A `dbus-daemon` of its own in a temporary directory, killed on drop.
#[derive(Debug)]
pub struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts `dbus-daemon` on a Unix socket in a new temporary directory.
    pub fn start() -> Result<PrivateBus, PrivateBusError> {
        let dir = tempfile::tempdir().map_err(PrivateBusError::Config)?;
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&dir.path().join("bus")))
            .map_err(PrivateBusError::Config)?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(PrivateBusError::Spawn)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PrivateBusError::NoAddress("no stdout".into()));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let address = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(line)) if !line.trim().is_empty() => line.trim().to_owned(),
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PrivateBusError::NoAddress(match outcome {
                    Ok(Ok(_)) => "it exited first".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                }));
            }
        };
        Ok(PrivateBus {
            child,
            address,
            _dir: dir,
        })
    }

    /// The bus's D-Bus address (`unix:path=...,guid=...`).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_gateway::modem::{
        BusAddress, ModemError, ModemManager, SmsModem, MODEM_PATH_PREFIX,
    };
    use std::sync::Arc;

    const NUMBER: &str = "+919812345678";
    const HINDI: &str = "आपका बैलेंस ₹42.50 है। कृपया रिचार्ज करें।";

    async fn client(bus: &PrivateBus) -> Arc<dyn SmsModem> {
        let modem = ModemManager::connect(&BusAddress::Address(bus.address().to_owned()))
            .await
            .expect("connect to the private bus")
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
        Arc::new(modem)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_sends_the_exact_number_and_hindi_text_and_clears_storage() {
        let bus = PrivateBus::start().expect("private bus");
        let standin = ModemStandin::start(bus.address()).await.expect("stand-in");
        let modem = client(&bus).await;

        modem.send(NUMBER, HINDI).await.expect("send");

        assert_eq!(
            standin.sent(),
            vec![SentSms {
                number: NUMBER.into(),
                text: HINDI.into()
            }]
        );
        assert_eq!(standin.stored(), Vec::<String>::new());
        // And ModemManager's own List says the same.
        let connection = zbus::connection::Builder::address(bus.address())
            .expect("address")
            .build()
            .await
            .expect("connection");
        let listed: Vec<OwnedObjectPath> = connection
            .call_method(
                Some(SERVICE),
                MODEM_PATH,
                Some("org.freedesktop.ModemManager1.Modem.Messaging"),
                "List",
                &(),
            )
            .await
            .expect("List")
            .body()
            .deserialize()
            .expect("ao");
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_failed_send_names_the_dbus_error_and_the_next_send_goes() {
        let bus = PrivateBus::start().expect("private bus");
        let standin = ModemStandin::start(bus.address()).await.expect("stand-in");
        let modem = client(&bus).await;
        standin.fail_next_sends(1);

        let error = modem.send(NUMBER, "first").await.expect_err("must fail");
        match &error {
            ModemError::Refused { step, name, .. } => {
                assert_eq!(*step, "Sms.Send");
                assert_eq!(name, "org.freedesktop.ModemManager1.Error.Core.Failed");
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .contains("org.freedesktop.ModemManager1.Error.Core.Failed"),
            "{error}"
        );
        assert!(standin.sent().is_empty());
        assert_eq!(
            standin.stored(),
            Vec::<String>::new(),
            "a failed SMS is deleted too"
        );

        modem.send(NUMBER, "second").await.expect("the retry goes");
        assert_eq!(
            standin.sent(),
            vec![SentSms {
                number: NUMBER.into(),
                text: "second".into()
            }]
        );
        assert_eq!(standin.stored(), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_send_that_leaves_the_sms_unsent_is_an_error() {
        let bus = PrivateBus::start().expect("private bus");
        let standin = ModemStandin::start(bus.address()).await.expect("stand-in");
        let modem = client(&bus).await;
        standin.leave_next_sends_unsent(1);

        let error = modem.send(NUMBER, "text").await.expect_err("must fail");
        assert!(
            matches!(error, ModemError::NotSent { state: 1 }),
            "{error:?}"
        );
        assert_eq!(standin.stored(), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_without_modemmanager_on_the_bus_is_a_clear_error_not_a_hang() {
        let bus = PrivateBus::start().expect("private bus");
        let modem = client(&bus).await;

        let outcome = tokio::time::timeout(Duration::from_secs(10), modem.send(NUMBER, "x"))
            .await
            .expect("an answer, not a hang");
        let error = outcome.expect_err("nobody to send through");
        assert!(
            matches!(error, ModemError::NoModemManager { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("systemctl status ModemManager"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_that_never_answers_times_out() {
        let bus = PrivateBus::start().expect("private bus");
        // Owns ModemManager's name but never reads its messages.
        let squatter = zbus::connection::Builder::address(bus.address())
            .expect("address")
            .name(SERVICE)
            .expect("name")
            .build()
            .await
            .expect("squatter");
        let modem = ModemManager::connect(&BusAddress::Address(bus.address().to_owned()))
            .await
            .expect("connect")
            .with_timeouts(Duration::from_millis(500), Duration::from_millis(500));

        let outcome = tokio::time::timeout(Duration::from_secs(10), modem.send(NUMBER, "x"))
            .await
            .expect("bounded by the client's own timeout");
        drop(squatter);
        let error = outcome.expect_err("no answer");
        assert!(matches!(error, ModemError::Timeout { .. }), "{error:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modem_reads_and_clears_received_messages_but_not_outgoing_ones() {
        let bus = PrivateBus::start().expect("private bus");
        let standin = ModemStandin::start(bus.address()).await.expect("stand-in");
        let modem = ModemManager::connect(&BusAddress::Address(bus.address().to_owned()))
            .await
            .expect("connect");
        standin
            .deliver("+919800000001", "रिचार्ज 100")
            .await
            .expect("deliver");
        standin
            .deliver("+919800000002", "STATUS")
            .await
            .expect("deliver");

        let received = modem.received().await.expect("received");

        assert_eq!(
            received,
            vec![
                gramgrid_gateway::modem::ReceivedSms {
                    number: "+919800000001".into(),
                    text: "रिचार्ज 100".into()
                },
                gramgrid_gateway::modem::ReceivedSms {
                    number: "+919800000002".into(),
                    text: "STATUS".into()
                },
            ]
        );
        assert_eq!(standin.stored(), Vec::<String>::new());
        assert_eq!(modem.received().await.expect("again"), vec![]);
    }

    #[test]
    fn modem_standin_paths_are_where_modemmanager_puts_them() {
        assert!(MODEM_PATH.starts_with(MODEM_PATH_PREFIX));
        assert!(SMS_PATH_PREFIX.starts_with(MANAGER_PATH));
    }
}

/// A modem inside the process, for the demo (no D-Bus needed): it records what it sends.
#[derive(Debug, Default)]
pub struct InProcessModem {
    sent: Mutex<Vec<SentSms>>,
}

impl InProcessModem {
    /// Every message sent so far.
    pub fn sent(&self) -> Vec<SentSms> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl gramgrid_gateway::modem::SmsModem for InProcessModem {
    fn send<'a>(
        &'a self,
        number: &'a str,
        text: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<(), gramgrid_gateway::modem::ModemError>>
                + Send
                + 'a,
        >,
    > {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(SentSms {
                number: number.to_string(),
                text: text.to_string(),
            });
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

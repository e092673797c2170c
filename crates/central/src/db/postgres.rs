//! The PostgreSQL backend: the synchronous `postgres` client on a storage worker thread.
//!
//! TLS follows libpq's `sslmode` in `database_url` (rustls on the ring provider):
//! - absent or `disable`: plain TCP, as before TLS support;
//! - `prefer`: TLS if the server offers it, else plain; the certificate is not verified;
//! - `require`: TLS or no connection; the certificate is NOT verified (the link is encrypted,
//!   but a machine in the middle could pose as the server), unless `sslrootcert=PATH` is given,
//!   when it is checked as `verify-ca` (as libpq does);
//! - `verify-ca`: TLS, the certificate must chain to `sslrootcert=PATH` (or the system roots);
//!   its name is not checked;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host of the URL.
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` use the system's CA bundle (libpq would
//! read `~/.postgresql/root.crt`); `sslrootcert=system` asks for it explicitly.
use super::{DbError, Row, Tx, Value};
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, NoTls, Statement};
use gramgrid_net::secrets::Sealer;
use gramgrid_net::tls::SYSTEM_CA_BUNDLES;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A connection and its prepared statements: the central's SQL is a small fixed set, so each is
/// parsed and planned once per connection instead of once per call.
pub(super) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

pub(super) fn open(url: &str) -> Result<PgConn, DbError> {
    let url = PgUrl::parse(url)?;
    let client = match url.mode {
        None | Some(SslMode::Disable) => Client::connect(&url.driver_url, NoTls)?,
        Some(mode) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                mode,
                url.root_cert.as_ref(),
            )?);
            Client::connect(&url.driver_url, tls).map_err(|error| refused_tls(error, mode))?
        }
    };
    Ok(PgConn {
        client,
        statements: HashMap::new(),
    })
}

/// `sslmode` as libpq names it (`allow` is not supported: it would try plain TCP first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without checking its certificate; else plain TCP.
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, a certificate chaining to the roots, any name.
    VerifyCa,
    /// TLS, a certificate chaining to the roots and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, DbError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(DbError::PostgresTls(format!(
                    "sslmode '{other}' in database_url is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates that verify the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RootCert {
    /// A PEM file (`sslrootcert=PATH`).
    File(PathBuf),
    /// The system's CA bundle (`sslrootcert=system`, or no `sslrootcert`).
    System,
}

/// `database_url` split into what the driver parses and the TLS settings handled here: the
/// driver knows only `sslmode` disable/prefer/require and refuses `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PgUrl {
    /// The URL for the driver: `sslrootcert` removed, `verify-*` given as `require`.
    pub(super) driver_url: String,
    /// The `sslmode` asked for, if any.
    pub(super) mode: Option<SslMode>,
    /// `sslrootcert`, if given.
    pub(super) root_cert: Option<RootCert>,
}

impl PgUrl {
    pub(super) fn parse(url: &str) -> Result<PgUrl, DbError> {
        // The query starts at the first '?' after the user info (the driver reads the user info
        // up to the first '@', so a password may hold a '?').
        let authority = url.find("://").map_or(0, |i| i + 3);
        let host_start = url[authority..]
            .find('@')
            .map_or(authority, |i| authority + i + 1);
        let Some(query_start) = url[host_start..].find('?').map(|i| host_start + i) else {
            return Ok(PgUrl {
                driver_url: url.to_owned(),
                mode: None,
                root_cert: None,
            });
        };
        let mut kept = Vec::new();
        let mut mode = None;
        let mut root_cert = None;
        for pair in url[query_start + 1..].split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(SslMode::parse(&percent_decode(value)?)?),
                "sslrootcert" => {
                    root_cert = Some(match percent_decode(value)?.as_str() {
                        "" => {
                            return Err(DbError::PostgresTls(
                                "sslrootcert in database_url is empty: give the path of a PEM CA file, or `system`".into(),
                            ))
                        }
                        "system" => RootCert::System,
                        path => RootCert::File(PathBuf::from(path)),
                    })
                }
                _ => kept.push(pair.to_owned()),
            }
        }
        let driver_mode = match mode {
            None => None,
            Some(SslMode::Disable) => Some("disable"),
            Some(SslMode::Prefer) => Some("prefer"),
            Some(SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => Some("require"),
        };
        kept.extend(driver_mode.map(|m| format!("sslmode={m}")));
        let mut driver_url = url[..query_start].to_owned();
        if !kept.is_empty() {
            driver_url.push('?');
            driver_url.push_str(&kept.join("&"));
        }
        Ok(PgUrl {
            driver_url,
            mode,
            root_cert,
        })
    }
}

/// A query value with its `%XX` escapes decoded (as the driver decodes them).
fn percent_decode(text: &str) -> Result<String, DbError> {
    let bad = || {
        DbError::PostgresTls(format!(
            "'{text}' in database_url is not valid percent-encoding"
        ))
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A TLS connection failure made plain: the driver's error names only "error performing TLS
/// handshake" and keeps the reason (the server said no to TLS, an unknown issuer, a wrong name)
/// as its source.
fn refused_tls(error: ::postgres::Error, mode: SslMode) -> DbError {
    let mut reasons = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reasons.push(cause.to_string());
        source = cause.source();
    }
    if reasons
        .iter()
        .any(|r| r.contains("server does not support TLS"))
    {
        DbError::PostgresTls(format!(
            "the PostgreSQL server does not offer TLS, but database_url asks for sslmode={}: turn TLS on at the server (ssl = on, ssl_cert_file, ssl_key_file in postgresql.conf) or remove sslmode from database_url",
            mode.name()
        ))
    } else if error.to_string().contains("TLS handshake") {
        DbError::PostgresTls(format!(
            "the TLS handshake with the PostgreSQL server failed ({}) with sslmode={}: check sslrootcert (the CA that signed the server's certificate) and that the URL's host is a name the certificate carries",
            reasons.join(": "),
            mode.name()
        ))
    } else {
        DbError::Postgres(error)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode` (which is not `Disable`).
fn tls_config(
    mode: SslMode,
    root_cert: Option<&RootCert>,
) -> Result<rustls::ClientConfig, DbError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::PostgresTls(format!("cannot build the TLS configuration: {e}")))?;
    let verify_chain = |roots: RootCertStore| -> Result<Arc<dyn ServerCertVerifier>, DbError> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| {
                    DbError::PostgresTls(format!("cannot build the certificate verifier: {e}"))
                })?;
        Ok(Arc::new(AnyName(verifier)))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AnyCertificate(Arc::clone(&provider)))
        }
        (SslMode::Require, Some(root)) | (SslMode::VerifyCa, Some(root)) => {
            verify_chain(roots(root)?)?
        }
        (SslMode::VerifyCa, None) => verify_chain(roots(&RootCert::System)?)?,
        (SslMode::VerifyFull, root) => {
            let roots = roots(root.unwrap_or(&RootCert::System))?;
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn roots(root: &RootCert) -> Result<RootCertStore, DbError> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = read_certs(path).map_err(|reason| {
                DbError::PostgresTls(format!(
                    "cannot read sslrootcert {}: {reason}; give a PEM file of the CA that signed the server's certificate",
                    path.display()
                ))
            })?;
            for cert in certs {
                store.add(cert).map_err(|e| {
                    DbError::PostgresTls(format!(
                        "sslrootcert {} holds a certificate that is not usable as a CA: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        RootCert::System => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let candidates = from_env
                .into_iter()
                .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from));
            for path in candidates {
                if let Ok(certs) = read_certs(&path) {
                    store.add_parsable_certificates(certs);
                    break;
                }
            }
            if store.is_empty() {
                return Err(DbError::PostgresTls(format!(
                    "no system CA bundle found (SSL_CERT_FILE, {}) to verify the PostgreSQL server: give sslrootcert=PATH in database_url",
                    SYSTEM_CA_BUNDLES.join(", ")
                )));
            }
        }
    }
    Ok(store)
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("it holds no PEM certificate".into());
    }
    Ok(certs)
}

/// `sslmode=prefer`/`require` without a root certificate, as libpq: any server certificate is
/// accepted (the connection is encrypted, the server is not authenticated); the handshake's
/// signatures are still checked against the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the certificate must chain to the roots (and be in date), whatever name
/// it carries. The WebPKI verifier checks the name last, after the chain, so a name mismatch is
/// the only error let through.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl PgConn {
    /// Whether the connection still reaches the server: a dropped one (server restart, network
    /// cut, a terminated backend) is found by a ping before the next transaction, not by failing it.
    pub(super) fn is_usable(&mut self) -> bool {
        !self.client.is_closed()
            && self
                .client
                .is_valid(std::time::Duration::from_secs(5))
                .is_ok()
    }
}

pub(super) fn transaction<T, E: From<DbError>>(
    conn: &mut PgConn,
    sealer: &Sealer,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.client.transaction().map_err(DbError::from)?;
    let mut wrapped = PgTx {
        tx,
        statements: &mut conn.statements,
        sealer,
    };
    let out = f(&mut wrapped)?;
    wrapped.tx.commit().map_err(DbError::from)?;
    Ok(out)
}

struct PgTx<'a> {
    tx: ::postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    sealer: &'a Sealer,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    // The server infers each placeholder's type from the SQL; a Value fits integer and text ones.
    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::INT4, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    to_sql_checked!();
}

fn unique(error: ::postgres::Error) -> DbError {
    match error.code() {
        Some(code) if *code == ::postgres::error::SqlState::UNIQUE_VIOLATION => {
            DbError::Unique(error.to_string())
        }
        _ => DbError::Postgres(error),
    }
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// One column of an `UNNEST` insert, typed by its first non-NULL value.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
}

impl Tx for PgTx<'_> {
    fn sealer(&self) -> &Sealer {
        self.sealer
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// One `INSERT ... SELECT * FROM UNNEST($1::bigint[], ...)` per call: a single short statement
    /// however many rows, instead of parsing a statement with thousands of placeholders.
    fn insert_many(
        &mut self,
        table_and_columns: &str,
        width: usize,
        rows: &[Vec<Value>],
        suffix: &str,
    ) -> Result<u64, DbError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut columns: Vec<Column> = (0..width)
            .map(|c| {
                match rows
                    .iter()
                    .find_map(|r| r.get(c).filter(|v| **v != Value::Null))
                {
                    Some(Value::Text(_)) => Column::Text(Vec::with_capacity(rows.len())),
                    _ => Column::Int(Vec::with_capacity(rows.len())),
                }
            })
            .collect();
        for row in rows {
            for (c, column) in columns.iter_mut().enumerate() {
                match (column, row.get(c)) {
                    (Column::Int(values), Some(Value::Int(v))) => values.push(Some(*v)),
                    (Column::Text(values), Some(Value::Text(v))) => values.push(Some(v.clone())),
                    (Column::Int(values), Some(Value::Null) | None) => values.push(None),
                    (Column::Text(values), Some(Value::Null) | None) => values.push(None),
                    (_, Some(other)) => {
                        return Err(DbError::Type(format!("column {c} mixes types: {other:?}")))
                    }
                }
            }
        }
        let casts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(c, column)| match column {
                Column::Int(_) => format!("${}::bigint[]", c + 1),
                Column::Text(_) => format!("${}::text[]", c + 1),
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table_and_columns} SELECT * FROM UNNEST({}) {suffix}",
            casts.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = columns
            .iter()
            .map(|column| match column {
                Column::Int(values) => values as &(dyn ToSql + Sync),
                Column::Text(values) => values as &(dyn ToSql + Sync),
            })
            .collect();
        let statement = self.statement(&sql)?;
        self.tx.execute(&statement, &params).map_err(unique)
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        let statement = self.statement(sql)?;
        self.tx.execute(&statement, &params(values)).map_err(unique)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, DbError> {
        let statement = self.statement(sql)?;
        let rows = self.tx.query(&statement, &params(values))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(i)?
                        .map(|v| Value::Int(i64::from(v))),
                    Type::TEXT | Type::VARCHAR => {
                        row.try_get::<_, Option<String>>(i)?.map(Value::Text)
                    }
                    ref other => {
                        return Err(DbError::Type(format!("column {i} has type {other}")));
                    }
                };
                values.push(value.unwrap_or(Value::Null));
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn parse(url: &str) -> PgUrl {
        PgUrl::parse(url).unwrap()
    }

    #[test]
    fn a_url_without_sslmode_is_left_to_the_driver_as_plain_tcp() {
        for url in [
            "postgres://u:pw@h:5432/db",
            "postgres://u:p?w@h/db",
            "postgresql://h/db?application_name=central",
        ] {
            let parsed = parse(url);
            assert_eq!(parsed.driver_url, url);
            assert_eq!(parsed.mode, None);
            assert_eq!(parsed.root_cert, None);
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_for_the_driver() {
        let parsed = parse(
            "postgres://u:p?w@db.example:5432/central?application_name=c&sslmode=verify-full&sslrootcert=%2Fetc%2Fpg%20ca.pem",
        );
        assert_eq!(
            parsed.driver_url,
            "postgres://u:p?w@db.example:5432/central?application_name=c&sslmode=require"
        );
        assert_eq!(parsed.mode, Some(SslMode::VerifyFull));
        assert_eq!(
            parsed.root_cert,
            Some(RootCert::File(PathBuf::from("/etc/pg ca.pem")))
        );
        for (mode, driver) in [
            ("disable", "disable"),
            ("prefer", "prefer"),
            ("require", "require"),
            ("verify-ca", "require"),
        ] {
            let parsed = parse(&format!("postgres://h/db?sslmode={mode}"));
            assert_eq!(
                parsed.driver_url,
                format!("postgres://h/db?sslmode={driver}")
            );
            assert_eq!(parsed.mode.map(SslMode::name), Some(mode));
        }
        let system = parse("postgres://h/db?sslrootcert=system&sslmode=verify-ca");
        assert_eq!(system.root_cert, Some(RootCert::System));
        assert_eq!(system.driver_url, "postgres://h/db?sslmode=require");
    }

    #[test]
    fn an_unknown_sslmode_or_an_empty_sslrootcert_is_refused_with_the_choices() {
        for url in [
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=REQUIRE",
            "postgres://h/db?sslmode=require&sslrootcert=",
            "postgres://h/db?sslmode=%zz",
        ] {
            let error = PgUrl::parse(url).unwrap_err().to_string();
            assert!(error.starts_with("PostgreSQL TLS:"), "{url}: {error}");
        }
        let error = PgUrl::parse("postgres://h/db?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("disable, prefer, require, verify-ca, verify-full"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let Err(error) =
            open("postgres://u@127.0.0.1:9/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        else {
            panic!("connected without a CA file");
        };
        let error = error.to_string();
        assert!(
            error.contains("sslrootcert /nonexistent/ca.pem") && error.contains("PEM"),
            "{error}"
        );
    }

    /// A server that answers the TLS request "no" (as one with `ssl = off` does): with
    /// `sslmode=require` there is no connection, and the error says what to change.
    #[test]
    fn require_refuses_a_server_without_tls_and_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 8];
            socket.read_exact(&mut request).unwrap();
            // SSLRequest: length 8, code 80877103.
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
            socket.write_all(b"N").unwrap();
            // The client must hang up rather than go on in plain text.
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest);
            rest
        });
        let Err(error) = open(&format!(
            "postgres://u@127.0.0.1:{port}/db?sslmode=require&connect_timeout=5"
        )) else {
            panic!("connected in plain text");
        };
        let error = error.to_string();
        assert!(
            error.contains("does not offer TLS") && error.contains("sslmode=require"),
            "{error}"
        );
        assert!(
            server.join().unwrap().is_empty(),
            "nothing was sent in plain text"
        );
    }
}

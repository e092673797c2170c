//! Central schema migrations, one text for both backends, recorded in `schema_migrations`.
//!
//! Append new migrations at the end; never edit one that has shipped. `{AUTO_SEQ}` stands for a
//! database-numbered integer primary key (SQLite and PostgreSQL spell it differently). Times are UTC seconds, money
//! integer paise, energy integer Wh.
use super::{DbError, Tx, Value};

/// Migration `i` brings the schema from version `i` to `i + 1`. Statements are separated by `;`.
const MIGRATIONS: &[&str] = &[
    // 1: gateways, accounts, meters, readings, money, vouchers, sync logs, business events, outbox.
    r#"
    CREATE TABLE gateways (
        id TEXT PRIMARY KEY,
        -- highest contiguous priority-lane seq applied, and bulk-lane arrival seq stored
        priority_acked BIGINT NOT NULL DEFAULT 0,
        readings_acked BIGINT NOT NULL DEFAULT 0,
        -- last seq appended to this gateway's downlink log
        downlink_seq BIGINT NOT NULL DEFAULT 0,
        downlink_applied BIGINT NOT NULL DEFAULT 0,
        last_sync_at BIGINT,
        last_gateway_time BIGINT
    );
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        consumer_name TEXT NOT NULL,
        category TEXT NOT NULL,
        phone TEXT,
        gateway TEXT REFERENCES gateways(id),
        created_at BIGINT NOT NULL
    );
    CREATE INDEX accounts_by_gateway ON accounts(gateway);
    CREATE TABLE meters (
        serial TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(id),
        installed_at BIGINT NOT NULL,
        initial_register_wh BIGINT,
        dev_addr BIGINT,
        nwk_skey TEXT,
        app_skey TEXT,
        relay_state TEXT NOT NULL DEFAULT 'unknown',
        relay_state_at BIGINT
    );
    CREATE INDEX meters_by_account ON meters(account);
    -- Interval readings as the gateways stored them, with what their arrival charged at central.
    CREATE TABLE readings (
        meter TEXT NOT NULL,
        at BIGINT NOT NULL,
        register_wh BIGINT NOT NULL,
        charge_paise BIGINT NOT NULL,
        PRIMARY KEY (meter, at)
    );
    -- Cache, derivable from readings: each meter's latest reading.
    CREATE TABLE meter_cursor (
        meter TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        register_wh BIGINT NOT NULL
    );
    -- Cache, derivable from readings and the tariff book: energy and its cost per meter and segment.
    CREATE TABLE segment_energy (
        meter TEXT NOT NULL,
        month BIGINT NOT NULL,
        version TEXT NOT NULL,
        energy_wh BIGINT NOT NULL,
        energy_paise BIGINT NOT NULL,
        duty_paise BIGINT NOT NULL,
        PRIMARY KEY (meter, month, version)
    );
    -- Append-only money events from central (recharges, vouchers redeemed at a counter) and from
    -- gateways (fixed and minimum charges, voucher recharges). Energy charges are the readings'.
    CREATE TABLE ledger_events (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(id),
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        amount_paise BIGINT NOT NULL,
        effect_paise BIGINT NOT NULL,
        expires_at BIGINT,
        source TEXT NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger_events(account, at);
    -- API idempotency: a key names one request body and the event it made.
    CREATE TABLE recharge_requests (
        idempotency_key TEXT PRIMARY KEY,
        request TEXT NOT NULL,
        event_id TEXT NOT NULL
    );
    CREATE TABLE voucher_keys (
        key_id BIGINT PRIMARY KEY,
        secret_hex TEXT NOT NULL,
        public_key TEXT NOT NULL,
        issue_from BIGINT NOT NULL,
        issue_until BIGINT,
        revoked BIGINT NOT NULL DEFAULT 0
    );
    -- Issued vouchers by redemption id, state issued | redeemed | cancelled.
    CREATE TABLE vouchers (
        redemption_id TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES accounts(id),
        amount_paise BIGINT NOT NULL,
        issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        redeemed_at BIGINT,
        redeemed_by TEXT
    );
    -- Per-gateway append-only downlink log: event is the JSON of a sync::wire::DownlinkEvent.
    CREATE TABLE downlink (
        gateway TEXT NOT NULL REFERENCES gateways(id),
        seq BIGINT NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (gateway, seq)
    );
    -- Business events for the office: offline overdrafts, double redemptions, reused event ids,
    -- clock skew, records refused. Never data conflicts: everything is kept and reported.
    CREATE TABLE flags (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        gateway TEXT,
        account TEXT,
        at BIGINT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE anomalies (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        meter TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        at BIGINT NOT NULL
    );
    CREATE TABLE overrides (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        account TEXT NOT NULL,
        action TEXT NOT NULL,
        until BIGINT NOT NULL,
        technician TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE relay_events (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        meter TEXT NOT NULL,
        what TEXT NOT NULL,
        at BIGINT NOT NULL,
        detail TEXT NOT NULL
    );
    -- Notifications outbox: each row is sent once (sent_at set in the same step that sends it).
    CREATE TABLE notifications (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        sent_at BIGINT
    );
    CREATE TABLE published (
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        body TEXT NOT NULL,
        published_at BIGINT NOT NULL,
        PRIMARY KEY (kind, version)
    )
    "#,
    // 2: the API audit, one row per write request that committed, with the name of its token.
    r#"
    CREATE TABLE api_audit (
        id TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        token TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL
    );
    CREATE INDEX api_audit_by_at ON api_audit(at, id)
    "#,
    // 3: each gateway database's identity (`identity`): its instance, the highest exchange number
    // seen from it, and the lane epoch, raised at each resynchronisation so records of a restored
    // database get fresh origin ids.
    r#"
    ALTER TABLE gateways ADD COLUMN instance BIGINT;
    ALTER TABLE gateways ADD COLUMN last_exchange BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE gateways ADD COLUMN lane_epoch BIGINT NOT NULL DEFAULT 0
    "#,
    // 4: where an account was moved from, and when: that gateway's readings of its meter taken
    // before the move are still taken and handed to the new gateway (`origin`).
    r#"
    ALTER TABLE accounts ADD COLUMN moved_from TEXT;
    ALTER TABLE accounts ADD COLUMN moved_at BIGINT
    "#,
    // 5: guardrails. Why an account is protected (never cut automatically), or NULL. Urgent flags.
    // The gateways' relay decisions with their facts (`relay_decisions`, replayed on receipt), the
    // holds of their disconnection breakers and who released them (at the gateway or here), and
    // policy publishes central's own breaker held until an admin releases them (`policy_holds`).
    r#"
    ALTER TABLE accounts ADD COLUMN protected TEXT;
    ALTER TABLE flags ADD COLUMN urgent BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE relay_decisions (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        account TEXT NOT NULL,
        at BIGINT NOT NULL,
        record TEXT NOT NULL,
        replays BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (gateway, id)
    );
    CREATE INDEX relay_decisions_by_account ON relay_decisions(account, at);
    CREATE TABLE breaker_holds (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        at BIGINT NOT NULL,
        accounts TEXT NOT NULL,
        reasons TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        released_by TEXT,
        released_at BIGINT,
        release_reason TEXT,
        released_where TEXT,
        PRIMARY KEY (gateway, id)
    );
    CREATE TABLE policy_holds (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        policy TEXT NOT NULL,
        counts TEXT NOT NULL,
        held_at BIGINT NOT NULL,
        held_by TEXT NOT NULL,
        released_by TEXT,
        released_at BIGINT,
        release_reason TEXT
    )
    "#,
    // 6: messages that reach people. The consumer's language; each notification's variables (the
    // text is rendered from a template when sent), its state (queued, retrying, sent, delivered,
    // failed, office), who sent it (`sms_provider`, `gateway_modem`, `log`), attempts and the next
    // one, the provider's id, billed parts, the last error and the delivery receipt's time.
    r#"
    ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
    ALTER TABLE notifications ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE notifications ADD COLUMN state TEXT NOT NULL DEFAULT 'queued';
    ALTER TABLE notifications ADD COLUMN channel TEXT;
    ALTER TABLE notifications ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE notifications ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE notifications ADD COLUMN provider_id TEXT;
    ALTER TABLE notifications ADD COLUMN parts BIGINT;
    ALTER TABLE notifications ADD COLUMN last_error TEXT;
    ALTER TABLE notifications ADD COLUMN delivered_at BIGINT;
    UPDATE notifications SET state = 'sent', channel = 'log' WHERE sent_at IS NOT NULL;
    CREATE INDEX notifications_due ON notifications(state, next_attempt_at);
    CREATE INDEX notifications_by_account ON notifications(account, created_at)
    "#,
    // 7: the MQTT event outbox (`mqtt`): one row per integration event, queued in the transaction
    // of the change and marked published when the broker acknowledged it. `topic` is the topic
    // below `[mqtt] topic_prefix`; `payload` the JSON published. `mqtt_gateways` is whether each
    // gateway was last announced up or down, and when it last completed an exchange.
    r#"
    CREATE TABLE mqtt_events (
        seq {AUTO_SEQ},
        id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        published_at BIGINT
    );
    CREATE INDEX mqtt_events_unpublished ON mqtt_events(published_at, seq);
    CREATE TABLE mqtt_gateways (
        gateway TEXT PRIMARY KEY,
        up BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
    )
    "#,
    // 8: technicians (`technicians`). The accounts technicians log in to gateways with (an Argon2id
    // hash, never the password), sent to every gateway; what they did there, as the gateways
    // audited it (`technician_actions`, by the gateway's id for each action, and when it arrived).
    // `technicians_resend`: the gateway spoke a protocol too old for technician records since it
    // was last sent them all, so it gets them all again when it speaks a newer one (1 for the
    // gateways enrolled before this migration, 0 for a gateway enrolled with them).
    r#"
    CREATE TABLE technicians (
        name TEXT PRIMARY KEY,
        full_name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        active BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE technician_actions (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        technician TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT,
        detail TEXT NOT NULL,
        reason TEXT,
        at BIGINT NOT NULL,
        received_at BIGINT NOT NULL
    );
    CREATE INDEX technician_actions_by_at ON technician_actions(at, id);
    CREATE INDEX technician_actions_by_gateway ON technician_actions(gateway, at);
    CREATE INDEX technician_actions_by_technician ON technician_actions(technician, at);
    ALTER TABLE gateways ADD COLUMN technicians_resend BIGINT NOT NULL DEFAULT 1
    "#,
    // 9: spare meters (`stock`). Meters entered into a gateway's stock with their radio keys
    // (sealed like `meters`' keys), on no account until a technician installs one there; then the
    // account and time it went to. A meter that replaced another is billed in the slabs of the meter
    // it replaced (`billing_serial`, NULL: its own).
    r#"
    CREATE TABLE stock_meters (
        serial TEXT PRIMARY KEY,
        gateway TEXT NOT NULL REFERENCES gateways(id),
        dev_addr BIGINT NOT NULL,
        nwk_skey TEXT NOT NULL,
        app_skey TEXT NOT NULL,
        added_at BIGINT NOT NULL,
        installed_account TEXT,
        installed_at BIGINT
    );
    CREATE INDEX stock_meters_by_gateway ON stock_meters(gateway, serial);
    ALTER TABLE meters ADD COLUMN billing_serial TEXT
    "#,
    // 10: what meters report besides readings (`events`): their event log as each gateway sent it,
    // once per gateway and id, and the supply outages gateways found in it (`meters`: a JSON array
    // of serials; each row the gateway's latest word on the outage).
    r#"
    CREATE TABLE meter_events (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        meter TEXT NOT NULL,
        kind TEXT NOT NULL,
        at BIGINT NOT NULL,
        command_id BIGINT,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (gateway, id)
    );
    CREATE INDEX meter_events_by_meter ON meter_events(meter, at);
    CREATE TABLE supply_outages (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        meters TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (gateway, id)
    );
    CREATE INDEX supply_outages_by_start ON supply_outages(started_at)
    "#,
    // 11: time-of-day tariffs. Each segment keeps its ToD weight (Σ Wh × slot basis points) beside
    // its energy, and its surcharge less rebates (`gramgrid_core::tariff::SegmentEnergy`).
    r#"
    ALTER TABLE segment_energy ADD COLUMN tod_weight BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE segment_energy ADD COLUMN tod_paise BIGINT NOT NULL DEFAULT 0
    "#,
    // 12: sanctioned load. The load each connection is sanctioned for (W), set by the office and
    // sent to its gateway; the gateway reports months the household draws more.
    r#"
    ALTER TABLE accounts ADD COLUMN sanctioned_load_w BIGINT
    "#,
    // 13: distribution-transformer energy audit (`transformers`, `energy_audit`). The transformer
    // meter of each gateway (no account, never billed; keys sealed like `meters`' keys), and the
    // gateways' daily audits of each: the day's figures, each 15-minute interval's loss
    // (`interval_loss_wh`, a JSON array of Wh or null) and the ranked suspects (`suspects`, JSON).
    // A gateway may audit a day again when late readings arrive: the row is replaced, by id.
    // `transformers_resend`: the gateway spoke a protocol too old for transformer meters, so it
    // gets its transformer meters again when it speaks a newer one.
    r#"
    CREATE TABLE transformer_meters (
        serial TEXT PRIMARY KEY,
        gateway TEXT NOT NULL REFERENCES gateways(id),
        installed_at BIGINT NOT NULL,
        dev_addr BIGINT NOT NULL,
        nwk_skey TEXT NOT NULL,
        app_skey TEXT NOT NULL
    );
    CREATE INDEX transformer_meters_by_gateway ON transformer_meters(gateway, serial);
    CREATE TABLE energy_audits (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        transformer TEXT NOT NULL,
        day TEXT NOT NULL,
        intervals_compared BIGINT NOT NULL,
        meters BIGINT NOT NULL,
        transformer_wh BIGINT NOT NULL,
        consumers_wh BIGINT NOT NULL,
        allowance_wh BIGINT NOT NULL,
        flagged BIGINT NOT NULL,
        interval_loss_wh TEXT NOT NULL,
        suspects TEXT NOT NULL,
        at BIGINT NOT NULL,
        received_at BIGINT NOT NULL
    );
    CREATE INDEX energy_audits_by_day ON energy_audits(day, gateway);
    CREATE INDEX energy_audits_by_gateway ON energy_audits(gateway, day);
    ALTER TABLE gateways ADD COLUMN transformers_resend BIGINT NOT NULL DEFAULT 0
    "#,
    // 14: net metering: each reading's export register (0 for a meter without one), and the
    // export accumulated beside the import in the meter cursor and each segment.
    r#"
    ALTER TABLE readings ADD COLUMN export_wh BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE meter_cursor ADD COLUMN export_wh BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE segment_energy ADD COLUMN export_wh BIGINT NOT NULL DEFAULT 0
    "#,
    // 15: the sync protocol each gateway spoke in its latest exchange (NULL: none yet), so a tariff
    // version a gateway would misbill is not published while that gateway is too old for it.
    r#"
    ALTER TABLE gateways ADD COLUMN protocol BIGINT
    "#,
    // 16: office staff for the console (roles viewer, cashier, engineer, admin; an Argon2id hash
    // each; failed logins and the lock-out), who resolved a flag, when and how, and the hours in
    // which each gateway synced (its backhaul's uptime; 31 days kept).
    r#"
    CREATE TABLE staff (
        name TEXT PRIMARY KEY,
        full_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'cashier', 'engineer', 'admin')),
        password_hash TEXT NOT NULL,
        active BIGINT NOT NULL,
        failures BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT,
        updated_at BIGINT NOT NULL
    );
    ALTER TABLE flags ADD COLUMN resolved_by TEXT;
    ALTER TABLE flags ADD COLUMN resolved_at BIGINT;
    ALTER TABLE flags ADD COLUMN resolution TEXT;
    CREATE TABLE gateway_sync_hours (
        gateway TEXT NOT NULL,
        hour BIGINT NOT NULL,
        PRIMARY KEY (gateway, hour)
    )
    "#,
    // 17: one-time login codes of the consumer page (`consumer::code`): each account's latest
    // code as its HMAC only (NULL once used), its wrong entries, and the codes sent in the
    // account's current rate window.
    r#"
    CREATE TABLE consumer_codes (
        account TEXT PRIMARY KEY REFERENCES accounts(id),
        code_hash TEXT,
        issued_at BIGINT NOT NULL,
        tries BIGINT NOT NULL,
        window_start BIGINT NOT NULL,
        sent_in_window BIGINT NOT NULL
    )
    "#,
    // 18: what each gateway last reported about itself with a sync session (protocol 11;
    // `gateway_status`): version, start, upload backlog and the lane marks it was counted from,
    // radio counters (JSON), disk space.
    r#"
    CREATE TABLE gateway_status (
        gateway TEXT PRIMARY KEY REFERENCES gateways(id),
        reported_at BIGINT NOT NULL,
        software TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        priority_backlog BIGINT NOT NULL,
        readings_backlog BIGINT NOT NULL,
        oldest_unsent BIGINT,
        radio TEXT,
        disk_free BIGINT,
        disk_total BIGINT,
        priority_from BIGINT NOT NULL,
        readings_from BIGINT NOT NULL
    )
    "#,
    // 19: DLMS/COSEM meters (sync protocol 12, docs/dlms.md section 7). A meter's system title
    // (16 hex digits) and association keys (sealed like its radio keys, bound to the table and
    // serial), all NULL for a payload-v1 meter; household and transformer meters alike.
    // `dlms_resend`: the gateway spoke a protocol too old for DLMS records, so it gets its DLMS
    // meters' records again when it speaks a newer one.
    r#"
    ALTER TABLE meters ADD COLUMN dlms_title TEXT;
    ALTER TABLE meters ADD COLUMN dlms_ek TEXT;
    ALTER TABLE meters ADD COLUMN dlms_ak TEXT;
    ALTER TABLE transformer_meters ADD COLUMN dlms_title TEXT;
    ALTER TABLE transformer_meters ADD COLUMN dlms_ek TEXT;
    ALTER TABLE transformer_meters ADD COLUMN dlms_ak TEXT;
    ALTER TABLE gateways ADD COLUMN dlms_resend BIGINT NOT NULL DEFAULT 0
    "#,
];

/// What `{AUTO_SEQ}` in a migration stands for: an integer primary key numbered by the database
/// (the one column type the two backends spell differently).
fn auto_seq(backend: &str) -> &'static str {
    match backend {
        "postgres" => "BIGSERIAL PRIMARY KEY",
        _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
    }
}

/// Applies the migrations this database has not seen yet, each in order.
pub(super) fn migrate(tx: &mut dyn Tx) -> Result<(), DbError> {
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)",
        &[],
    )?;
    let found = tx.query_int("SELECT MAX(version) FROM schema_migrations", &[])?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(DbError::NewerSchema { found, known });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let migration = migration.replace("{AUTO_SEQ}", auto_seq(tx.backend()));
        for statement in migration.split(';').filter(|s| !s.trim().is_empty()) {
            tx.execute(statement, &[])?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[Value::Int(i as i64 + 1)],
        )?;
    }
    Ok(())
}

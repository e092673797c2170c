//! Schema migrations of the gateway database, applied in order and recorded in `PRAGMA user_version`.
//!
//! Append new migrations at the end; never edit one that has shipped. Each runs in one transaction
//! with foreign keys off, and commits only if `PRAGMA foreign_key_check` finds nothing, so a
//! migration may rebuild a table that others refer to (SQLite's 12-step procedure,
//! <https://www.sqlite.org/lang_altertable.html#otheralter>): create the new table, copy the rows
//! (with their rowids), drop the old one, rename the new one, re-create indexes and triggers.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, meters, readings, money events, relay commands, alerts, audit.
    r#"
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        consumer_name TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ('domestic', 'commercial', 'agricultural')),
        phone TEXT,
        created_at INTEGER NOT NULL,
        -- policy state: when the balance was first seen at or below the threshold (NULL: above it)
        below_threshold_since INTEGER
    );

    CREATE TABLE meters (
        id INTEGER PRIMARY KEY,
        serial TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        installed_at INTEGER NOT NULL,
        removed_at INTEGER,
        relay_state TEXT NOT NULL DEFAULT 'unknown'
            CHECK (relay_state IN ('connected', 'disconnected', 'unknown')),
        relay_state_at INTEGER
    );
    CREATE INDEX meters_by_account ON meters(account);

    -- One row per interval reading: the cumulative import register, and what its arrival charged.
    -- Keyed by time first so that readings, which arrive time-major (every meter's interval at
    -- once), append to the end of the b-tree instead of rewriting a page per meter.
    CREATE TABLE readings (
        at INTEGER NOT NULL,
        meter INTEGER NOT NULL,
        register_wh INTEGER NOT NULL,
        charge_paise INTEGER NOT NULL,
        PRIMARY KEY (at, meter)
    ) WITHOUT ROWID;

    -- Cache, derivable from readings: each meter's latest reading.
    CREATE TABLE meter_cursor (
        meter INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        register_wh INTEGER NOT NULL
    );

    CREATE TABLE tariff_versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );

    -- Cache, derivable from readings and the tariff book: energy and its cost per meter and segment.
    CREATE TABLE segment_energy (
        month INTEGER NOT NULL,
        version INTEGER NOT NULL REFERENCES tariff_versions(id),
        meter INTEGER NOT NULL,
        energy_wh INTEGER NOT NULL,
        energy_paise INTEGER NOT NULL,
        duty_paise INTEGER NOT NULL,
        PRIMARY KEY (month, version, meter)
    ) WITHOUT ROWID;

    -- Append-only money events (recharges, fixed and minimum charges, adjustments, emergency credit).
    -- Energy charges are the readings' charge_paise.
    CREATE TABLE ledger_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('recharge', 'charge', 'fixed_charge', 'minimum_charge', 'adjustment', 'emergency_credit')),
        amount_paise INTEGER NOT NULL,
        effect_paise INTEGER NOT NULL,
        expires_at INTEGER,
        note TEXT
    );
    CREATE INDEX ledger_by_account ON ledger_events(account, kind, at);

    CREATE TABLE relay_commands (
        id TEXT PRIMARY KEY,
        meter INTEGER NOT NULL REFERENCES meters(id),
        action TEXT NOT NULL CHECK (action IN ('connect', 'disconnect')),
        state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'acknowledged', 'failed', 'timed_out')),
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_sent_at INTEGER,
        closed_at INTEGER
    );
    CREATE INDEX relay_commands_open ON relay_commands(state) WHERE state IN ('queued', 'sent');

    -- Append-only history of every relay command state change.
    CREATE TABLE relay_command_events (
        seq INTEGER PRIMARY KEY,
        command TEXT NOT NULL REFERENCES relay_commands(id),
        state TEXT NOT NULL,
        at INTEGER NOT NULL,
        detail TEXT
    );

    -- Notifications to consumers and the office; the id makes each one unique.
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        message TEXT NOT NULL,
        sent_at INTEGER
    );
    CREATE INDEX alerts_unsent ON alerts(created_at) WHERE sent_at IS NULL;

    -- Technician manual overrides of the relay: audited, append-only.
    CREATE TABLE overrides (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        action TEXT NOT NULL CHECK (action IN ('connect', 'disconnect')),
        until INTEGER NOT NULL,
        technician TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );

    -- Readings the office should look at (register went back, conflicting duplicates, refused).
    CREATE TABLE anomalies (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        meter INTEGER,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    "#,
    // 2: sync. Readings get an arrival sequence (the bulk upload lane); locally made events go to a
    // priority outbox; cursors, voucher keys and redemptions, published config and clock state.
    r#"
    CREATE TABLE readings_v2 (
        at INTEGER NOT NULL,
        meter INTEGER NOT NULL,
        register_wh INTEGER NOT NULL,
        charge_paise INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (at, meter)
    ) WITHOUT ROWID;
    INSERT INTO readings_v2 (at, meter, register_wh, charge_paise, seq)
        SELECT at, meter, register_wh, charge_paise, ROW_NUMBER() OVER (ORDER BY at, meter) FROM readings;
    DROP TABLE readings;
    ALTER TABLE readings_v2 RENAME TO readings;
    -- Arrival order is append order, so this index grows at its end.
    CREATE UNIQUE INDEX readings_by_seq ON readings(seq);

    -- Events made here that the central server must learn, in order (the priority upload lane).
    CREATE TABLE sync_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event BLOB NOT NULL
    );

    -- Upload acknowledgements and the download cursor (saved with the rows they cover).
    CREATE TABLE sync_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );

    CREATE TABLE voucher_keys (
        key_id INTEGER PRIMARY KEY,
        body TEXT NOT NULL
    );

    -- Vouchers redeemed here or known to be redeemed or cancelled elsewhere: refused from then on.
    CREATE TABLE vouchers_spent (
        redemption_id TEXT PRIMARY KEY,
        where_spent TEXT NOT NULL,
        at INTEGER NOT NULL
    );

    -- LoRaWAN ABP session keys of each meter, as provisioned by the central server.
    CREATE TABLE meter_keys (
        meter INTEGER PRIMARY KEY REFERENCES meters(id),
        dev_addr INTEGER NOT NULL UNIQUE,
        nwk_skey TEXT NOT NULL,
        app_skey TEXT NOT NULL
    );

    -- Tariff and policy versions published by the central server (they win over the config file).
    CREATE TABLE published_config (
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, version)
    );
    "#,
    // 3: the arrival-sequence index cost a second b-tree write per reading; the bulk upload lane
    // now range-scans the primary key from the earliest unacknowledged reading instead
    // (`sync_state.readings_unacked_from`).
    r#"
    DROP INDEX readings_by_seq;
    INSERT INTO sync_state (key, value) SELECT 'readings_unacked_from', COALESCE(MIN(at), 0) FROM readings;
    "#,
    // 4: meter link. The last LoRaWAN frame counter accepted from (up) and sent to (down) each meter,
    // so that a frame replayed after a gateway restart is still refused.
    r#"
    CREATE TABLE link_counters (
        meter INTEGER PRIMARY KEY REFERENCES meters(id),
        fcnt_up INTEGER,
        fcnt_down INTEGER
    );
    "#,
    // 5: relay command state 'withdrawn' (a disconnect no longer wanted before the meter confirmed
    // it). A CHECK constraint cannot be altered, so relay_commands is rebuilt; relay_command_events
    // refers to it by id. Rowids are kept: a meter's newest command is found by creation time, then
    // rowid.
    r#"
    CREATE TABLE relay_commands_v5 (
        id TEXT PRIMARY KEY,
        meter INTEGER NOT NULL REFERENCES meters(id),
        action TEXT NOT NULL CHECK (action IN ('connect', 'disconnect')),
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'sent', 'acknowledged', 'failed', 'timed_out', 'withdrawn')),
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_sent_at INTEGER,
        closed_at INTEGER
    );
    INSERT INTO relay_commands_v5
        (rowid, id, meter, action, state, reason, created_at, attempts, last_sent_at, closed_at)
        SELECT rowid, id, meter, action, state, reason, created_at, attempts, last_sent_at, closed_at
        FROM relay_commands;
    DROP TABLE relay_commands;
    ALTER TABLE relay_commands_v5 RENAME TO relay_commands;
    CREATE INDEX relay_commands_open ON relay_commands(state) WHERE state IN ('queued', 'sent');
    "#,
    // 6: the policy pass asks, for every account, for its meter's energy charges and its latest
    // relay command; without these both scanned whole tables (all meters' segments, every command).
    // Neither index changes when a reading is charged: only a new segment or command adds an entry.
    r#"
    CREATE INDEX segment_energy_by_meter ON segment_energy(meter, month);
    CREATE INDEX relay_commands_by_meter ON relay_commands(meter, created_at);
    "#,
    // 7: every outbox row says which format its body is in (`gramgrid_proto::outbox`); rows written
    // before this were all format 1.
    r#"
    ALTER TABLE sync_outbox ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    "#,
    // 8: the database's identity in sync (`gramgrid_proto::wire::GatewayIdentity`): a random
    // instance made once, here, and the count of exchanges. A backup keeps both, so central tells
    // a restored database by an exchange number it has seen before.
    r#"
    INSERT INTO sync_state (key, value) VALUES ('instance', random());
    INSERT INTO sync_state (key, value) VALUES ('exchange', 0);
    "#,
    // 9: an account central moved to another gateway stays with its history but is served no more.
    r#"
    ALTER TABLE accounts ADD COLUMN removed_at INTEGER;
    "#,
    // 10: readings of a meter handed over from another gateway (`DownlinkEvent::Readings`), kept
    // until the gateway ingests them with its tariff book.
    r#"
    CREATE TABLE handed_over_readings (
        serial TEXT NOT NULL,
        at INTEGER NOT NULL,
        register_wh INTEGER NOT NULL,
        PRIMARY KEY (serial, at)
    );
    "#,
    // 11: guardrails. Money event kind 'arrears' (carried over from post-paid; the CHECK is
    // rebuilt); protected accounts (never cut automatically); the cut that opened a debt (for the
    // partial-payment rule); the disconnection breaker's holds and their releases; every relay
    // decision with the facts it was made from (`gramgrid_core::decision`, JSON).
    r#"
    CREATE TABLE ledger_events_v11 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('recharge', 'charge', 'fixed_charge', 'minimum_charge', 'adjustment', 'emergency_credit', 'arrears')),
        amount_paise INTEGER NOT NULL,
        effect_paise INTEGER NOT NULL,
        expires_at INTEGER,
        note TEXT
    );
    INSERT INTO ledger_events_v11 (seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note)
        SELECT seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note FROM ledger_events;
    DROP TABLE ledger_events;
    ALTER TABLE ledger_events_v11 RENAME TO ledger_events;
    CREATE INDEX ledger_by_account ON ledger_events(account, kind, at);
    ALTER TABLE accounts ADD COLUMN protected TEXT;
    ALTER TABLE accounts ADD COLUMN cut_at INTEGER;
    ALTER TABLE accounts ADD COLUMN cut_debt_paise INTEGER;
    CREATE TABLE breaker_holds (
        id TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        accounts TEXT NOT NULL,
        reasons TEXT NOT NULL,
        released_by TEXT,
        released_reason TEXT,
        released_at INTEGER,
        used_at INTEGER
    );
    CREATE TABLE relay_decisions (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        at INTEGER NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX relay_decisions_by_account ON relay_decisions(account, at);
    "#,
    // 12: messages that reach people. The consumer's language (from central); each alert's template
    // variables and the outbox row of its notice (amended when the gateway's modem sends it).
    r#"
    ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
    ALTER TABLE alerts ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE alerts ADD COLUMN outbox_seq INTEGER;
    "#,
    // 13: technicians. The accounts they log in to the local web app with, as central sent them
    // (`DownlinkEvent::Technician`: an Argon2id hash, never a password; `updated_at` is central's
    // time, NULL for one put here), failed logins and lock-outs per name, and what they did here
    // (each action also queued for central in the priority outbox).
    r#"
    CREATE TABLE technicians (
        name TEXT PRIMARY KEY,
        full_name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL,
        updated_at INTEGER
    );
    CREATE TABLE technician_logins (
        name TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until INTEGER
    );
    CREATE TABLE technician_actions (
        id TEXT PRIMARY KEY,
        technician TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT,
        detail TEXT NOT NULL,
        reason TEXT,
        at INTEGER NOT NULL
    );
    CREATE INDEX technician_actions_by_at ON technician_actions(at);
    "#,
    // 14: spare meters. Meters central sent into this gateway's stock (`DownlinkEvent::StockMeter`,
    // keys sealed like `meter_keys`) until a technician installs one; a meter that replaces another
    // is billed in the slabs of the meter it replaced (`billing_meter`, NULL: its own).
    r#"
    CREATE TABLE stock_meters (
        serial TEXT PRIMARY KEY,
        dev_addr INTEGER NOT NULL,
        nwk_skey TEXT NOT NULL,
        app_skey TEXT NOT NULL
    );
    ALTER TABLE meters ADD COLUMN billing_meter INTEGER REFERENCES meters(id);
    "#,
    // 15: what meters report besides readings (`store::events`): their event log, once per
    // (meter, kind, meter time), and the supply outages found in the power events (`meters`: a
    // JSON array of serials).
    r#"
    CREATE TABLE meter_events (
        id TEXT PRIMARY KEY,
        meter INTEGER NOT NULL REFERENCES meters(id),
        kind TEXT NOT NULL,
        at INTEGER NOT NULL,
        command_id INTEGER,
        received_at INTEGER NOT NULL
    );
    CREATE INDEX meter_events_by_meter ON meter_events(meter, at);
    CREATE INDEX meter_events_by_at ON meter_events(at);
    CREATE TABLE supply_outages (
        id TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        meters TEXT NOT NULL
    );
    "#,
    // 16: time-of-day tariffs. Each segment keeps its ToD weight (Σ Wh × slot basis points) beside
    // its energy, and its surcharge less rebates (`gramgrid_core::tariff::SegmentEnergy`).
    r#"
    ALTER TABLE segment_energy ADD COLUMN tod_weight INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE segment_energy ADD COLUMN tod_paise INTEGER NOT NULL DEFAULT 0;
    "#,
    // 17: demand charges. Money event kind 'demand_charge' (the CHECK is rebuilt, as in 11).
    r#"
    CREATE TABLE ledger_events_v17 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('recharge', 'charge', 'fixed_charge', 'minimum_charge', 'adjustment', 'emergency_credit', 'arrears',
             'demand_charge')),
        amount_paise INTEGER NOT NULL,
        effect_paise INTEGER NOT NULL,
        expires_at INTEGER,
        note TEXT
    );
    INSERT INTO ledger_events_v17 (seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note)
        SELECT seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note FROM ledger_events;
    DROP TABLE ledger_events;
    ALTER TABLE ledger_events_v17 RENAME TO ledger_events;
    CREATE INDEX ledger_by_account ON ledger_events(account, kind, at);
    "#,
    // 18: sanctioned loads (`store::load`): each account's, as central sent it, and the months a
    // household drew more in several intervals (each once).
    r#"
    ALTER TABLE accounts ADD COLUMN sanctioned_load_w INTEGER;
    CREATE TABLE overloads (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        month TEXT NOT NULL,
        intervals INTEGER NOT NULL,
        max_demand_w INTEGER NOT NULL,
        sanctioned_w INTEGER NOT NULL,
        at INTEGER NOT NULL
    );
    "#,
    // 19: an outage found or changed waits for the next policy pass to be queued for central
    // (`Store::queue_outage_updates`), so a village's meters reporting one cut cost one record.
    r#"
    ALTER TABLE supply_outages ADD COLUMN uplink_pending INTEGER NOT NULL DEFAULT 0;
    "#,
    // 20: the distribution transformer's meter (`store::audit`): a meter of role 'dt' belongs to no
    // account, so `account` may be NULL for it (and only for it); and the daily energy audits.
    // Foreign keys are off during migrations, so the rebuilt table keeps its ids and every row
    // that refers to one.
    r#"
    CREATE TABLE meters_v20 (
        id INTEGER PRIMARY KEY,
        serial TEXT NOT NULL UNIQUE,
        account TEXT REFERENCES accounts(id),
        installed_at INTEGER NOT NULL,
        removed_at INTEGER,
        relay_state TEXT NOT NULL DEFAULT 'unknown'
            CHECK (relay_state IN ('connected', 'disconnected', 'unknown')),
        relay_state_at INTEGER,
        billing_meter INTEGER REFERENCES meters(id),
        role TEXT NOT NULL DEFAULT 'consumer' CHECK (role IN ('consumer', 'dt')),
        CHECK ((role = 'dt') = (account IS NULL))
    );
    INSERT INTO meters_v20 (id, serial, account, installed_at, removed_at, relay_state, relay_state_at, billing_meter)
        SELECT id, serial, account, installed_at, removed_at, relay_state, relay_state_at, billing_meter FROM meters;
    DROP TABLE meters;
    ALTER TABLE meters_v20 RENAME TO meters;
    CREATE INDEX meters_by_account ON meters(account);
    CREATE TABLE energy_audits (
        id TEXT PRIMARY KEY,
        transformer INTEGER NOT NULL REFERENCES meters(id),
        day TEXT NOT NULL,
        report TEXT NOT NULL,
        at INTEGER NOT NULL,
        UNIQUE (transformer, day)
    );
    "#,
    // 21: net metering: a reading's export register (0 for a meter without one) and each
    // segment's exported energy, beside its import.
    r#"
    ALTER TABLE readings ADD COLUMN export_wh INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE segment_energy ADD COLUMN export_wh INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE meter_cursor ADD COLUMN export_wh INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE handed_over_readings ADD COLUMN export_wh INTEGER NOT NULL DEFAULT 0;
    "#,
    // 22: net metering's month close (`store::netmeter`): money event kind 'export_credit' (the
    // CHECK is rebuilt, as in 17), and each account's closed months with what the close did with
    // its export (`core::netmeter::MonthClose` as JSON; `banked_out_wh` is the next close's bank).
    r#"
    CREATE TABLE ledger_events_v22 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL REFERENCES accounts(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('recharge', 'charge', 'fixed_charge', 'minimum_charge', 'adjustment', 'emergency_credit', 'arrears',
             'demand_charge', 'export_credit')),
        amount_paise INTEGER NOT NULL,
        effect_paise INTEGER NOT NULL,
        expires_at INTEGER,
        note TEXT
    );
    INSERT INTO ledger_events_v22 (seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note)
        SELECT seq, id, account, at, kind, amount_paise, effect_paise, expires_at, note FROM ledger_events;
    DROP TABLE ledger_events;
    ALTER TABLE ledger_events_v22 RENAME TO ledger_events;
    CREATE INDEX ledger_by_account ON ledger_events(account, kind, at);
    CREATE TABLE export_bank (
        account TEXT NOT NULL REFERENCES accounts(id),
        month TEXT NOT NULL,
        banked_out_wh INTEGER NOT NULL,
        report TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (account, month)
    );
    "#,
    // 23: load-limit trips (`[load] trip_after_intervals`): each trip disconnect the policy pass
    // queued, with the end of its lockout and the sanctioned load it was over; written in the
    // transaction that queues the command.
    r#"
    CREATE TABLE load_trips (
        command TEXT PRIMARY KEY REFERENCES relay_commands(id),
        account TEXT NOT NULL REFERENCES accounts(id),
        at INTEGER NOT NULL,
        until INTEGER NOT NULL,
        sanctioned_w INTEGER NOT NULL
    );
    CREATE INDEX load_trips_by_account ON load_trips(account, at);
    "#,
    // 24: DLMS/COSEM meters (docs/dlms.md section 7): a meter's global keys (sealed like
    // `meter_keys`) and system title, and the invocation counters of its association: the next
    // one the gateway uses, and the last one accepted from the meter. New keys start both again.
    r#"
    CREATE TABLE meter_dlms (
        meter INTEGER PRIMARY KEY REFERENCES meters(id),
        system_title TEXT NOT NULL,
        ek TEXT NOT NULL,
        ak TEXT NOT NULL
    );
    CREATE TABLE dlms_counters (
        meter INTEGER PRIMARY KEY REFERENCES meters(id),
        gateway_next_ic INTEGER,
        meter_last_ic INTEGER
    );
    "#,
];

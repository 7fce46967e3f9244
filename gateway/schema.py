"""The gateway database's tables (SQLite): the device-facing ones (outcomes, dead letters,
refusals, queries and their answers, confirmations) and the federation's (cursors,
snapshots). gateway.store and gateway.journal are the only code that reads or writes them.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    device      TEXT    NOT NULL,
    counter     INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    model       INTEGER NOT NULL,
    domain      INTEGER NOT NULL,
    label       INTEGER NOT NULL,
    confidence  INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    topk        TEXT    NOT NULL,
    profile     TEXT    NOT NULL,
    frame       BLOB    NOT NULL,
    port        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    ext         BLOB,
    PRIMARY KEY (device, counter)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at REAL    NOT NULL,
    port        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    device      TEXT,
    counter     INTEGER,
    consumed    INTEGER NOT NULL DEFAULT 0,
    frame       BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_consumed
    ON dead_letters (device, counter) WHERE consumed = 1;
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device, id);
CREATE TABLE IF NOT EXISTS refusals (
    port        TEXT    NOT NULL,
    code        TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    first_at    REAL    NOT NULL,
    last_at     REAL    NOT NULL,
    PRIMARY KEY (port, code, detail)
);
CREATE TABLE IF NOT EXISTS refusal_samples (
    port        TEXT    NOT NULL,
    slot        INTEGER NOT NULL,
    received_at REAL    NOT NULL,
    code        TEXT    NOT NULL,
    frame       BLOB    NOT NULL,
    PRIMARY KEY (port, slot)
);
CREATE TABLE IF NOT EXISTS retention (
    device      TEXT    PRIMARY KEY,
    evicted     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    device      TEXT    NOT NULL,
    counter     INTEGER NOT NULL,
    kid         BLOB    NOT NULL,
    profile     TEXT    NOT NULL,
    domain      INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    frame       BLOB    NOT NULL,
    port        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    answer      BLOB,
    status      INTEGER,
    answered_at REAL,
    PRIMARY KEY (device, counter)
);
CREATE TABLE IF NOT EXISTS confirmations (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    counter     INTEGER NOT NULL,
    label       INTEGER NOT NULL,
    confirmed_at REAL   NOT NULL,
    UNIQUE (device, counter)
);
CREATE TABLE IF NOT EXISTS cursors (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    shard       TEXT    PRIMARY KEY,
    sequence    INTEGER NOT NULL,
    state       BLOB    NOT NULL
);
"""
# Columns added after version 0.1.0 databases were created: (table, column, declaration).
MIGRATIONS = [("outcomes", "ext", "BLOB")]

-- Migration 1: the relay's metadata, as in the SQLite schema (version 3).
-- Ids and hashes are bytea of fixed length; counts are bigint (the relay
-- refuses values above 2^63 - 1 before they get here).
CREATE TABLE identities (
    fingerprint bytea PRIMARY KEY CHECK (octet_length(fingerprint) = 32),
    document bytea NOT NULL
);
CREATE TABLE vaults (
    vault bytea PRIMARY KEY CHECK (octet_length(vault) = 16),
    owner bytea NOT NULL,
    head_seq bigint NOT NULL CHECK (head_seq >= 0),
    head_hash bytea NOT NULL CHECK (octet_length(head_hash) = 32)
);
-- The log: one row per entry; (vault, seq) is unique, so an entry can
-- never be stored twice even if two appends raced past the head check.
CREATE TABLE entries (
    vault bytea NOT NULL REFERENCES vaults (vault),
    seq bigint NOT NULL CHECK (seq >= 0),
    hash bytea NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (vault, seq)
);
CREATE TABLE blobs (
    vault bytea NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    len bigint NOT NULL CHECK (len >= 0),
    uploader bytea NOT NULL,
    PRIMARY KEY (vault, hash)
);
CREATE INDEX blobs_by_hash ON blobs (hash);
CREATE TABLE blob_refs (
    vault bytea NOT NULL,
    hash bytea NOT NULL,
    record bytea NOT NULL,
    collection bytea NOT NULL,
    PRIMARY KEY (vault, hash, record)
);
CREATE TABLE inbox (
    member bytea NOT NULL,
    vault bytea NOT NULL,
    PRIMARY KEY (member, vault)
);
CREATE TABLE usage (
    account bytea PRIMARY KEY,
    bytes bigint NOT NULL CHECK (bytes >= 0)
);
CREATE TABLE small_blobs (
    hash bytea PRIMARY KEY,
    bytes bytea NOT NULL
);
-- Bytes of unfinished uploads, charged to the accounts that stored them;
-- touched is the relay's Unix time of the last charge.
CREATE TABLE uploads (
    vault bytea NOT NULL,
    hash bytea NOT NULL,
    account bytea NOT NULL,
    bytes bigint NOT NULL CHECK (bytes >= 0),
    touched bigint NOT NULL,
    PRIMARY KEY (vault, hash, account)
);
CREATE INDEX uploads_by_touched ON uploads (touched);

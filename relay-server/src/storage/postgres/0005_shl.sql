-- Migration 4: SMART Health Links (decision 49), as SQLite schema 5: links
-- by the SHA-256 of their id, their JWE files, their access record and
-- short-lived file tickets (by hash).
CREATE TABLE shl_links (
    hash bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    owner bytea NOT NULL CHECK (octet_length(owner) = 32),
    created_at bigint NOT NULL,
    expires_at bigint,
    long_term boolean NOT NULL,
    direct boolean NOT NULL,
    passcode bytea,
    max_attempts bigint NOT NULL CHECK (max_attempts >= 0),
    failed bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    revoked_at bigint,
    files bigint NOT NULL,
    bytes bigint NOT NULL,
    accesses bigint NOT NULL DEFAULT 0
);
CREATE INDEX shl_links_owner ON shl_links (owner);
CREATE TABLE shl_files (
    hash bytea NOT NULL REFERENCES shl_links (hash),
    idx bigint NOT NULL,
    content_type text NOT NULL,
    jwe text NOT NULL,
    PRIMARY KEY (hash, idx)
);
CREATE TABLE shl_access (
    hash bytea NOT NULL REFERENCES shl_links (hash),
    seq bigint NOT NULL,
    at bigint NOT NULL,
    recipient text NOT NULL,
    outcome smallint NOT NULL,
    PRIMARY KEY (hash, seq)
);
CREATE TABLE shl_tickets (
    ticket bytea PRIMARY KEY CHECK (octet_length(ticket) = 32),
    hash bytea NOT NULL REFERENCES shl_links (hash),
    idx bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX shl_tickets_expiry ON shl_tickets (expires_at);

-- Migration 3: the owners each member accepts shares from (decision 43),
-- as SQLite schema 4: a version that only grows, and the owners' 32-byte
-- fingerprints concatenated.
CREATE TABLE inbox_accepted (
    member bytea PRIMARY KEY CHECK (octet_length(member) = 32),
    version bigint NOT NULL CHECK (version >= 0),
    owners bytea NOT NULL CHECK (octet_length(owners) % 32 = 0)
);

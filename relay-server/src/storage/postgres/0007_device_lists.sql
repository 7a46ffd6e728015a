-- Migration 7: the directory of people's device lists (decision 70), as
-- SQLite schema 6: the current version's serial, which only grows, and the
-- versions from the newest one the person's root signed, each prefixed by
-- its u32 length.
CREATE TABLE device_lists (
    person bytea PRIMARY KEY CHECK (octet_length(person) = 32),
    serial bigint NOT NULL CHECK (serial >= 0),
    lists bytea NOT NULL
);

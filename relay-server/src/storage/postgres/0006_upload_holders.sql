-- Migration 6: who holds an S3 upload's lease (storage::s3, decision 46).
-- `holder` is the key of a session-level advisory lock that the holding
-- relay keeps on a connection of its own for as long as it lives. When
-- that session ends (the relay was killed, or lost its database), the
-- lock is gone and another relay may take the upload over at once
-- instead of waiting for `lease_until`. NULL: a lease taken before this
-- migration, which only runs out.
ALTER TABLE s3_uploads ADD COLUMN holder bigint;

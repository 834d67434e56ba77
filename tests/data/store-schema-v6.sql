-- The schema of a store made by landmark before the jobs package owned its tables: the store's
-- migrations 1 to 6 as they stood then (4 and 5 were the jobs tables), and its version.
CREATE TABLE landmark_schema (version integer NOT NULL);
INSERT INTO landmark_schema VALUES (6);
-- 1
CREATE TABLE IF NOT EXISTS landmark_meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS landmarks (
    id             bigserial PRIMARY KEY,
    uri            text NOT NULL UNIQUE,
    extractor      text NOT NULL,
    width          integer NOT NULL CHECK (width > 0),
    height         integer NOT NULL CHECK (height > 0),
    num_features   integer NOT NULL CHECK (num_features >= 0),
    descriptor_dim integer NOT NULL CHECK (descriptor_dim > 0),
    locations      bytea NOT NULL,
    descriptors    bytea NOT NULL,
    content_sha256 text NOT NULL,
    added_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (length(locations) = 4 * num_features),
    CHECK (length(descriptors) = 2 * num_features * descriptor_dim)
);
-- 2
CREATE SEQUENCE IF NOT EXISTS landmark_revision;
ALTER TABLE landmarks ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT nextval('landmark_revision');
-- 3
ALTER TABLE landmarks ALTER COLUMN locations SET STORAGE EXTERNAL,
                      ALTER COLUMN descriptors SET STORAGE EXTERNAL;
-- 4
CREATE TABLE IF NOT EXISTS jobs (
    id          text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('index', 'query')),
    status      text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    parameters  jsonb NOT NULL,
    done        integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    total       integer NOT NULL DEFAULT 0,
    error       text,
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
-- 5
CREATE TABLE IF NOT EXISTS job_batches (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    batch       integer NOT NULL,
    uris        jsonb NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    worker      text,
    stored      integer NOT NULL DEFAULT 0,
    unchanged   integer NOT NULL DEFAULT 0,
    failures    jsonb NOT NULL DEFAULT '[]',
    finished_at timestamptz,
    PRIMARY KEY (job_id, batch)
);
-- 6
ALTER TABLE landmarks ADD COLUMN IF NOT EXISTS descriptor_encoding text NOT NULL DEFAULT 'float16'
    CHECK (descriptor_encoding IN ('float16', 'int8'));
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT conname FROM pg_constraint
                WHERE conrelid = 'landmarks'::regclass AND contype = 'c'
                  AND pg_get_constraintdef(oid) LIKE '%length(descriptors)%'
    LOOP
        EXECUTE format('ALTER TABLE landmarks DROP CONSTRAINT %I', name);
    END LOOP;
END $$;
ALTER TABLE landmarks ADD CONSTRAINT landmarks_descriptor_bytes CHECK (
    length(descriptors) = CASE descriptor_encoding WHEN 'int8' THEN 1 ELSE 2 END * num_features * descriptor_dim
);

-- Analyst accounts of the workbench, append-only: the latest row per name (created_at)
-- is current (a password change or a disabled account is a new row). Only werkzeug
-- password hashes are stored.
CREATE TABLE IF NOT EXISTS {database}.app_users
(
    name String,
    role LowCardinality(String),
    password_hash String,
    created_at DateTime64(3, 'UTC'),
    active Bool
)
ENGINE = ReplacingMergeTree
ORDER BY (name, created_at)

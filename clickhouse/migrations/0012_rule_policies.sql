-- Every rule policy version ever published: append-only, the source of truth for the
-- rules in force (the highest version). A rollback is a new version carrying an older
-- one's rules, so the history reads in order. Two publishers racing for the same number
-- both insert; the first (created_at, then sha256) owns the version and the other is told
-- to retry (clickhouse/rules.py), so nothing is silently replaced.
CREATE TABLE IF NOT EXISTS {database}.rule_policies
(
    version UInt32,
    created_at DateTime64(3, 'UTC'),
    author LowCardinality(String),
    action LowCardinality(String),
    note String,
    policy String,
    diff String,
    sha256 String
)
ENGINE = MergeTree
ORDER BY (version, created_at, sha256)

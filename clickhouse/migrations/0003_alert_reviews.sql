-- Analyst verdicts: an append-only trail; an alert's status is its latest verdict
-- (argMax by reviewed_at). A retried write of the same verdict folds on (alert_id,
-- reviewed_at).
CREATE TABLE IF NOT EXISTS {database}.alert_reviews
(
    alert_id String,
    txn_id String,
    user_id String,
    verdict LowCardinality(String),
    assignee LowCardinality(String),
    note Nullable(String),
    reviewed_at DateTime64(3, 'UTC'),
    schema_version UInt8
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, reviewed_at)

-- Every refused message with its whole payload (the transactions-dlq topic carries a
-- truncated copy and the payload_sha256 of one too large for a Kafka record). Keyed by
-- where it was read, so a replay folds into the same row.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    payload_sha256 String,
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    error_code LowCardinality(String),
    error_message String,
    key Nullable(String),
    value Nullable(String),
    value_size UInt64,
    failed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (source_topic, source_partition, source_offset, payload_sha256)
TTL toDateTime(failed_at) + INTERVAL {ttl_days} DAY

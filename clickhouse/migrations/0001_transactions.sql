-- Every scored transaction. Replays after a restart insert the same txn_id again:
-- ReplacingMergeTree folds them on merge, and every query de-duplicates at read time
-- (FINAL) so figures are right before merges run. The sorting key holds only event
-- fields, identical across replays; TTL runs on processed_at so replayed history
-- (evaluation, backfills) is kept for {ttl_days} days after it was scored.
CREATE TABLE IF NOT EXISTS {database}.transactions
(
    txn_id String,
    ts DateTime64(3, 'UTC'),
    user_id String,
    card_id String,
    merchant_id String,
    merchant_category LowCardinality(String),
    amount Float64,
    currency LowCardinality(String),
    lat Float64,
    lon Float64,
    country LowCardinality(String),
    channel LowCardinality(String),
    device_id Nullable(String),
    ip Nullable(String),
    schema_version UInt8,
    is_fraud Nullable(UInt8),
    pattern LowCardinality(Nullable(String)),
    amount_usd Float64,
    features Map(String, Float64),
    anomaly_raw Float64,
    anomaly_score Float64,
    reasons Array(Tuple(code String, detail String, contribution Float64)),
    risk_score Float64,
    decision LowCardinality(String),
    model_version LowCardinality(String),
    processed_at DateTime64(3, 'UTC'),
    late Bool,
    INDEX idx_txn_id txn_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (toStartOfHour(ts), user_id, txn_id)
TTL toDateTime(processed_at) + INTERVAL {ttl_days} DAY

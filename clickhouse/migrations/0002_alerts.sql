-- Alert v1 rows, one per flagged transaction; alert_id = uuid5(txn_id) so a replay
-- writes the same key again and queries de-duplicate with FINAL.
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    alert_id String,
    txn_id String,
    user_id String,
    card_id String,
    merchant_id String,
    ts DateTime64(3, 'UTC'),
    amount Float64,
    currency LowCardinality(String),
    country LowCardinality(String),
    channel LowCardinality(String),
    lat Float64,
    lon Float64,
    risk_score Float64,
    decision LowCardinality(String),
    reasons Array(Tuple(code String, detail String, contribution Float64)),
    anomaly_score Float64,
    features Map(String, Float64),
    model_version LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    schema_version UInt8,
    INDEX idx_user user_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (toStartOfHour(ts), alert_id)

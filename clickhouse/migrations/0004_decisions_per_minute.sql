-- Per-minute rollup read by the dashboard's time series. Counts are uniqExact states
-- of txn_id, so a replayed transaction is counted once even before any merge.
CREATE TABLE IF NOT EXISTS {database}.decisions_per_minute
(
    minute DateTime('UTC'),
    decision LowCardinality(String),
    txns AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, decision)

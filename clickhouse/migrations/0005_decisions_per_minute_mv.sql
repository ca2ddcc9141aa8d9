-- Feeds decisions_per_minute from every insert into transactions.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.decisions_per_minute_mv
TO {database}.decisions_per_minute
AS SELECT
    toStartOfMinute(ts) AS minute,
    decision,
    uniqExactState(txn_id) AS txns
FROM {database}.transactions
GROUP BY minute, decision

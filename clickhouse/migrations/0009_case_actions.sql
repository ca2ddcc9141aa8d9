-- Analyst actions on cases (claim, assign, verdict, note, close): the append-only audit
-- trail. Cases themselves are derived from alerts and these rows at read time (see
-- schemas/cases.py): a close action lists the case's alerts, so replayed alerts (same
-- alert_id) stay in their case. A retried write of the same action folds on action_id.
CREATE TABLE IF NOT EXISTS {database}.case_actions
(
    action_id String,
    case_id String,
    user_id String,
    seq UInt32,
    action LowCardinality(String),
    actor LowCardinality(String),
    at DateTime64(3, 'UTC'),
    alert_ids Array(String),
    assignee LowCardinality(String),
    verdict LowCardinality(String),
    note Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (user_id, case_id, action_id)

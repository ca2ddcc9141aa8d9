-- When each event entered the system (Kafka timestamp, or when a file source read it):
-- processed_at - ingested_at is the scoring latency the dashboard reports, meaningful
-- for live traffic and for replays alike (processed_at - ts is not, for replays).
ALTER TABLE {database}.transactions
    ADD COLUMN IF NOT EXISTS ingested_at Nullable(DateTime64(3, 'UTC')) AFTER late

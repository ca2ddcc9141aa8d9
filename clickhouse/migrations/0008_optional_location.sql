-- Transaction v2 / Alert v2: card-not-present traffic may carry no location, stored as
-- NULL (never an invented point); maps and geo features skip it.
ALTER TABLE {database}.transactions MODIFY COLUMN lat Nullable(Float64);
ALTER TABLE {database}.transactions MODIFY COLUMN lon Nullable(Float64);
ALTER TABLE {database}.alerts MODIFY COLUMN lat Nullable(Float64);
ALTER TABLE {database}.alerts MODIFY COLUMN lon Nullable(Float64)

-- Rules as data: every row records the policy version that scored it, the hits of the
-- policy's shadow rules (what they would have done) and the rules that failed on it.
ALTER TABLE {database}.transactions ADD COLUMN IF NOT EXISTS policy_version UInt32 DEFAULT 0;
ALTER TABLE {database}.transactions ADD COLUMN IF NOT EXISTS shadow_reasons Array(Tuple(code String, detail String, contribution Float64));
ALTER TABLE {database}.transactions ADD COLUMN IF NOT EXISTS rule_errors Array(String)

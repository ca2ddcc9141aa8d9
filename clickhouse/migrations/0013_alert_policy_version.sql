-- Alert v3: the rule policy version that raised each alert.
ALTER TABLE {database}.alerts ADD COLUMN IF NOT EXISTS policy_version UInt32 DEFAULT 0 AFTER created_at

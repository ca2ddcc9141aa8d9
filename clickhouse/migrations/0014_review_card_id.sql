-- Review v2: the card of the reviewed transaction (null on v1 verdicts), so the flow
-- marks or clears that card on a verdict.
ALTER TABLE {database}.alert_reviews ADD COLUMN IF NOT EXISTS card_id Nullable(String) AFTER user_id

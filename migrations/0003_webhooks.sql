-- Webhook capture (issue 13).

-- Which user a prediction belongs to, learned when a rewrite-route response
-- showed it starting: a webhook for it later carries no user of its own.
CREATE TABLE predictions (
    prediction_id TEXT   NOT NULL PRIMARY KEY,
    user_id       TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Webhook deliveries already captured, by webhook-id (the same on every
-- retry of one delivery): a retry is not captured twice.
CREATE TABLE webhook_events (
    webhook_id  TEXT   NOT NULL PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_events_received ON webhook_events (received_at);
CREATE INDEX predictions_created ON predictions (created_at);

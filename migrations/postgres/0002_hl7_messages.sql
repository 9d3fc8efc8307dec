-- HL7 v2 messages received over MLLP (issue 4), PostgreSQL flavour. See docs/storage.md.
-- The raw message is stored before it is processed (status 'received'), then updated to
-- 'processed' or 'error' with the reason and the ACK that was (or will again be) sent.
CREATE TABLE hl7_messages (
    id                  BIGSERIAL PRIMARY KEY,
    received_at         BIGINT NOT NULL,             -- microseconds since the Unix epoch, UTC
    sending_application TEXT   NOT NULL DEFAULT '',  -- MSH-3, ER7 text
    sending_facility    TEXT   NOT NULL DEFAULT '',  -- MSH-4, ER7 text
    control_id          TEXT,                        -- MSH-10; NULL when absent (no idempotency)
    message_type        TEXT   NOT NULL DEFAULT '',  -- MSH-9, e.g. ORU^R01^ORU_R01
    version             TEXT   NOT NULL DEFAULT '',  -- MSH-12
    raw                 TEXT   NOT NULL,             -- the message as received (lossy UTF-8 for other charsets)
    status              TEXT   NOT NULL,             -- received | processed | error
    reason              TEXT,                        -- why status is 'error'
    ack                 TEXT,                        -- the application ACK (ER7, CR terminators)
    processed_at        BIGINT                       -- microseconds; NULL while 'received'
);
-- A repeated MSH-10 from the same sender (MSH-3, MSH-4) is the same message (HL7 v2.5.1 2.9).
CREATE UNIQUE INDEX hl7_messages_sender_control
    ON hl7_messages (sending_application, sending_facility, control_id);
CREATE INDEX hl7_messages_status ON hl7_messages (status, id);

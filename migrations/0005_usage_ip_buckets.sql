-- Which source addresses used a key in each minute (rolled up into hours like key_usage), so the
-- usage report counts distinct addresses within a range exactly. key_usage_ips keeps first and last
-- sighting per address for the NEW_IP_BURST detector; it cannot say whether an address seen before
-- and after a range was seen within it.
CREATE TABLE key_usage_ip_buckets (
    key_id  uuid NOT NULL,
    bucket  text NOT NULL CHECK (bucket IN ('minute', 'hour')),
    start   timestamptz NOT NULL,
    ip      text NOT NULL,
    PRIMARY KEY (key_id, bucket, start, ip)
);
CREATE INDEX key_usage_ip_buckets_start ON key_usage_ip_buckets (bucket, start);

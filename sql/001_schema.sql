-- lease-agent schema: nodes, the lease of each cluster, and the view of the master.
-- Applied in name order with the other files of sql/; applying it twice changes nothing.
-- All times written here are the database's clock (clock_timestamp()); they are for
-- operators, the master view, assert_master and liveness. The agents' own safety
-- decisions use their monotonic clocks only (see sql/PROTOCOL.md).

CREATE SCHEMA IF NOT EXISTS lease_agent;

-- One row per registered agent. A node that restarts (new incarnation) or whose
-- heartbeat expired registers again: registered_at moves to the back of the line.
CREATE TABLE IF NOT EXISTS lease_agent.node (
    cluster        text        NOT NULL,
    node           text        NOT NULL,
    address        text        NOT NULL DEFAULT '',
    incarnation    text        NOT NULL,
    registered_at  timestamptz NOT NULL,
    heartbeat_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,   -- live while expires_at > clock_timestamp()
    PRIMARY KEY (cluster, node)
);
-- Schema 3: the protocol the node's agent speaks (2: no switchover; 3: switchover).
ALTER TABLE lease_agent.node ADD COLUMN IF NOT EXISTS protocol integer NOT NULL DEFAULT 2;

-- One row per cluster. holder is null when the lease is free. epoch grows by one at
-- every acquisition: the fencing token. version changes at every write of the row
-- (renewal, acquisition, release): standbys watch it.
CREATE TABLE IF NOT EXISTS lease_agent.lease (
    cluster             text        PRIMARY KEY,
    holder              text,
    holder_incarnation  text,
    epoch               bigint      NOT NULL DEFAULT 0,
    version             bigint      NOT NULL DEFAULT 0,
    acquired_at         timestamptz,
    expires_at          timestamptz,
    CHECK ((holder IS NULL) = (holder_incarnation IS NULL))
);
-- Schema 3: switchover. A request names the node the master is to hand the lease to
-- (switchover_to, valid until switchover_until); the hand-over frees the lease reserved
-- for that node (reserved_for, until reserved_until): while the reservation lasts, only
-- that node may take the free lease. ttl_ms is the holder's ttl, written at every renewal.
-- Every one of these times is the database's clock, and only decides who may take a
-- FREE lease and when: none of them can make two masters (sql/PROTOCOL.md).
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS ttl_ms integer;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS switchover_to text;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS switchover_requested_at timestamptz;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS switchover_until timestamptz;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS reserved_for text;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS reserved_until timestamptz;

-- Schema version the agent checks at start ("schema missing or too old"). Version 3 added
-- switchover; agents of version 2 keep running on it (their heartbeat is kept, see
-- sql/002_protocol.sql).
CREATE TABLE IF NOT EXISTS lease_agent.schema_info (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    integer NOT NULL
);
INSERT INTO lease_agent.schema_info (version) VALUES (3)
    ON CONFLICT (singleton) DO UPDATE SET version = GREATEST(lease_agent.schema_info.version, EXCLUDED.version);

-- The master of each cluster: the lease is held and unexpired right now.
CREATE OR REPLACE VIEW lease_agent.master AS
    SELECT l.cluster, l.holder AS node, n.address, l.epoch, l.acquired_at, l.expires_at
      FROM lease_agent.lease l
      LEFT JOIN lease_agent.node n ON n.cluster = l.cluster AND n.node = l.holder
     WHERE l.holder IS NOT NULL AND l.expires_at > clock_timestamp();

-- Fencing: raises unless p_node holds p_cluster's unexpired lease at p_epoch. An
-- application calls it in its own transaction, before its write, so that a stale
-- master's write fails instead of landing.
CREATE OR REPLACE FUNCTION lease_agent.assert_master(p_cluster text, p_node text, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    l lease_agent.lease%ROWTYPE;
BEGIN
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    IF NOT FOUND OR l.holder IS DISTINCT FROM p_node OR l.epoch <> p_epoch
       OR l.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'lease-agent: node % is not the master of cluster % at epoch %',
                        p_node, p_cluster, p_epoch
            USING ERRCODE = 'LA001',
                  DETAIL = format('lease holder %s, epoch %s, expires %s',
                                  coalesce(l.holder, '(none)'), coalesce(l.epoch::text, '-'),
                                  coalesce(l.expires_at::text, '-'));
    END IF;
END;
$$;

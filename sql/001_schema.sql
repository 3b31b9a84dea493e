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
-- Schema 3: the protocol the node's agent speaks (2: no switchover; 3: switchover;
-- 4: strict fencing, server lives; 5: hand-off, a channel per cluster; 6: a channel per
-- agent, which a hand-off to it, or a switchover request of it, also notifies).
ALTER TABLE lease_agent.node ADD COLUMN IF NOT EXISTS protocol integer NOT NULL DEFAULT 2;
-- Schema 4: when the node left the cluster (a clean stop); null while its process lives.
-- A node keeps its place in the line (registered_at) for as long as its incarnation
-- lives, even while its heartbeat lapsed; only a new incarnation joins the back.
ALTER TABLE lease_agent.node ADD COLUMN IF NOT EXISTS left_at timestamptz;
-- Schema 5: the line of succession in order, for the next in line that every standby's
-- heartbeat answers and for the hand-off of a clean stop.
CREATE INDEX IF NOT EXISTS node_line ON lease_agent.node (cluster, registered_at, node);

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
-- Schema 4: the cluster came back from silence (no live registration at all: an outage
-- of the database, or of every agent) at resumed_at; the last heartbeat before it was at
-- silent_since. For ttl after resumed_at, the nodes that were live when the silence
-- began and did not leave keep their place in the line although their registrations
-- expired, so the line is not the order in which agents happen to reconnect.
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS resumed_at timestamptz;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS silent_since timestamptz;
-- Schema 5: renewed_at is the last write of the row by its holder (a renewal, an
-- acquisition, a hand-off) and renew_ms the holder's renew: the next in line times its
-- heartbeat just after the master's next renewal from them (sql/PROTOCOL.md, "Watching
-- without notifications"). handed_at/handed_how: the lease was handed to its holder by a
-- clean stop ('handed') or a switchover ('switchover') of the master before it, and the
-- holder has not renewed it yet (sql/PROTOCOL.md, "Hand-off").
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS renewed_at timestamptz;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS renew_ms integer;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS handed_at timestamptz;
ALTER TABLE lease_agent.lease ADD COLUMN IF NOT EXISTS handed_how text;

-- Schema 4: one row per term (an epoch of a cluster's lease), for strict fencing.
-- assert_master locks the term's row FOR SHARE in the application's transaction; the
-- acquisition of the next term updates it (ended_at), so it waits until every
-- transaction that passed assert_master for that term has ended: a write that passed
-- the fence commits before the next term begins, or fails. Renewals never touch it, so
-- they never wait behind application transactions. Ended terms are deleted by the
-- acquisition after next.
CREATE TABLE IF NOT EXISTS lease_agent.term (
    cluster             text        NOT NULL,
    epoch               bigint      NOT NULL,
    holder              text        NOT NULL,
    holder_incarnation  text        NOT NULL,
    began_at            timestamptz NOT NULL,
    ended_at            timestamptz,
    PRIMARY KEY (cluster, epoch)
);
-- The term of a lease held when a database of schema 3 is upgraded.
INSERT INTO lease_agent.term (cluster, epoch, holder, holder_incarnation, began_at)
     SELECT cluster, epoch, holder, holder_incarnation, coalesce(acquired_at, clock_timestamp())
       FROM lease_agent.lease WHERE holder IS NOT NULL
ON CONFLICT DO NOTHING;

-- Schema 4: the identity of the server's life. An UNLOGGED table: crash recovery (a
-- crash of the server, an immediate stop, or a crash of one backend, after which the
-- postmaster reinitialises and recovers) empties it, and replication does not carry
-- it (a promoted standby starts with it empty). lease_agent.server_life() fills it
-- with a new random token when it is empty. So a token that an agent sees again means
-- that no acknowledged commit was lost since it last saw it (sql/PROTOCOL.md, "Lost
-- commits"); a new token, that some may have been.
CREATE UNLOGGED TABLE IF NOT EXISTS lease_agent.server_life (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    token      text        NOT NULL,
    began_at   timestamptz NOT NULL   -- when the first agent saw this life (the database's clock)
);

-- Schema 4 added tables: a role that already runs agents (it may update the lease table)
-- gets the same access to them, so that agents keep running across `schema apply`
-- without new GRANTs. (Run by the schema's owner; anyone else grants what they may.)
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT ro.rolname
               FROM pg_class c, aclexplode(c.relacl) a, pg_roles ro
              WHERE c.oid = 'lease_agent.lease'::regclass AND a.privilege_type = 'UPDATE'
                AND a.grantee = ro.oid AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON lease_agent.term, lease_agent.server_life TO %I',
                       r.rolname);
    END LOOP;
END;
$$;

-- Schema version the agent checks at start ("schema missing or too old"). Version 3 added
-- switchover, version 4 strict fencing, server lives and the line kept across outages,
-- version 5 the hand-off of a clean stop, a channel per cluster and renewals without
-- notifications, version 6 a channel per agent; agents of versions 2 to 5 keep running on
-- it (their heartbeats are kept, see sql/002_protocol.sql).
CREATE TABLE IF NOT EXISTS lease_agent.schema_info (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    integer NOT NULL
);
INSERT INTO lease_agent.schema_info (version) VALUES (6)
    ON CONFLICT (singleton) DO UPDATE SET version = GREATEST(lease_agent.schema_info.version, EXCLUDED.version);

-- The master of each cluster: the lease is held and unexpired right now.
CREATE OR REPLACE VIEW lease_agent.master AS
    SELECT l.cluster, l.holder AS node, n.address, l.epoch, l.acquired_at, l.expires_at
      FROM lease_agent.lease l
      LEFT JOIN lease_agent.node n ON n.cluster = l.cluster AND n.node = l.holder
     WHERE l.holder IS NOT NULL AND l.expires_at > clock_timestamp();

-- Fencing: raises unless p_node holds p_cluster's unexpired lease at p_epoch. An
-- application calls it in its own transaction, before its write, so that a stale
-- master's write fails instead of landing. Strict: it locks the term's row FOR SHARE
-- (and takes a shared advisory lock that names this transaction to the next
-- acquisition), so the next term cannot begin until this transaction has ended: a write
-- that passed here commits before the next term begins, or fails. The next acquisition
-- waits for such transactions at most a tenth of its ttl, then ends them
-- (pg_terminate_backend: the agent's role needs pg_signal_backend for that) and says so
-- in its log and metrics. Hold the fence for short transactions only.
CREATE OR REPLACE FUNCTION lease_agent.fence_key(p_cluster text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext('lease_agent fence ' || p_cluster) $$;

CREATE OR REPLACE FUNCTION lease_agent.assert_master(p_cluster text, p_node text, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    l lease_agent.lease%ROWTYPE;
    t lease_agent.term%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(lease_agent.fence_key(p_cluster), (p_epoch % 2147483647)::integer);
    SELECT * INTO t FROM lease_agent.term WHERE cluster = p_cluster AND epoch = p_epoch FOR SHARE;
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    IF t.epoch IS NULL OR t.ended_at IS NOT NULL OR t.holder IS DISTINCT FROM p_node
       OR l.holder IS DISTINCT FROM p_node OR l.epoch IS DISTINCT FROM p_epoch
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

-- lease-agent protocol: the heartbeat (register, renew, acquire, answer in one statement),
-- the leave of a clean stop, and switchover (request, hand-over). The safety argument is
-- in sql/PROTOCOL.md.

-- One heartbeat of one agent, in one statement and one transaction:
--   1. register this node, or renew its heartbeat; refuse a name held by another live
--      incarnation (o_status 'duplicate');
--   2. renew the lease if this incarnation holds it (a lease of ours at an epoch we did
--      not claim, e.g. after an acquisition whose answer was lost, starts a new epoch);
--   3. otherwise acquire it, at epoch + 1, if it is free or still at the version this
--      agent has watched unchanged for ttl on its own clock (p_watched_version), and this
--      node is the first live node by (registered_at, node); a free lease reserved by a
--      switchover (reserved_for, until reserved_until) goes to that node alone;
--   4. schema 4 and before: notify channel lease_agent of every change of the lease row
--      ('<version> held <cluster>'); schema 5 announces no renewal and no acquisition
--      (the next in line times its heartbeat after the master's renewals instead:
--      o_next_in_line, o_renewed_ago_ms, o_holder_renew_ms), only hand-offs, releases
--      and switchover requests, on the cluster's own channel (lease_agent.channel);
--      schema 6 also on the own channel of each agent of protocol 6 they are for (the
--      target of a hand-off, the master asked for a switchover, every live node for a
--      release), which is all that agents of protocol 6 listen on (lease_agent.announce_to);
--   5. answer role, holder, epoch and version; to the master a pending switchover request
--      (o_switchover_to), to the others a reservation (o_reserved_for, o_reserved_left_ms).
-- p_epoch is the epoch this agent believes it holds as master, null when standby.
-- p_may_acquire false: this call starts no term (neither an acquisition nor a new epoch
-- of a lease of ours); a renewal at p_epoch goes on. An agent passes false until it has
-- seen the server's life (lease_agent.server_life()) for ttl: a database that lost
-- acknowledged commits (a crash with synchronous_commit off, a failover to an
-- asynchronous standby) may show an older lease row than a master acted on, and it
-- began a new life.
-- (Schema version 1 had no p_may_acquire.) lease_agent.beat is the implementation;
-- lease_agent.heartbeat_v6 is what agents of schema 6 call, heartbeat_v5, heartbeat_v4
-- and heartbeat_v3 what agents of schemas 5, 4 and 3 call, lease_agent.heartbeat what
-- agents of schema 2 call (kept with its exact signature and columns, so that their
-- prepared statements go on working across `schema apply`). p_protocol records which.
DROP FUNCTION IF EXISTS lease_agent.heartbeat(text, text, text, text, integer, bigint, bigint);

-- The identity of the server's life (sql/001_schema.sql, lease_agent.server_life): the
-- token, made now if crash recovery or a promotion left the table empty. Every agent
-- reads it at every connection, before its first heartbeat over it.
CREATE OR REPLACE FUNCTION lease_agent.server_life() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_token text;
BEGIN
    SELECT token INTO v_token FROM lease_agent.server_life;
    IF v_token IS NULL THEN
        INSERT INTO lease_agent.server_life (token, began_at)
             VALUES (gen_random_uuid()::text, clock_timestamp())
        ON CONFLICT (singleton) DO NOTHING;
        SELECT token INTO v_token FROM lease_agent.server_life;
    END IF;
    RETURN v_token;
END;
$$;

-- Strict fencing, the acquisition's side: ends term p_epoch of p_cluster (ended_at) before
-- the next begins. The update waits for every application transaction that passed
-- lease_agent.assert_master for that term (they lock its row FOR SHARE) to end, at most
-- p_wait_ms; then it ends those transactions (pg_terminate_backend of the sessions that
-- hold the term's shared advisory lock; this needs pg_signal_backend or the same role)
-- and waits for their end under the statement's own lock_timeout. Deletes older terms.
-- Answers how long it waited (ms, 0 when nobody held the fence) and how many sessions it
-- ended, for the agent's log line and metric.
CREATE OR REPLACE FUNCTION lease_agent.end_term(p_cluster text, p_epoch bigint, p_wait_ms integer,
                                                OUT waited_ms bigint, OUT ended integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_start    timestamptz;
    v_timeout  text := current_setting('lock_timeout');
    v_key1     oid := (lease_agent.fence_key(p_cluster)::bigint & 4294967295)::oid;
    v_key2     oid := ((p_epoch % 2147483647)::bigint & 4294967295)::oid;
BEGIN
    ended := 0;
    -- Terms before it ended at an earlier acquisition; a row still locked (an application
    -- left a transaction open after its assert_master of such a term failed) is left for
    -- the next time rather than waited for.
    BEGIN
        DELETE FROM lease_agent.term
         WHERE ctid IN (SELECT ctid FROM lease_agent.term
                         WHERE cluster = p_cluster AND epoch < p_epoch FOR UPDATE SKIP LOCKED);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- a role granted before DELETE was needed: the rows wait for a later cleanup
    END;
    v_start := clock_timestamp();
    BEGIN
        PERFORM set_config('lock_timeout', greatest(p_wait_ms, 1)::text, true);
        UPDATE lease_agent.term SET ended_at = clock_timestamp()
         WHERE cluster = p_cluster AND epoch = p_epoch;
        PERFORM set_config('lock_timeout', v_timeout, true);
    EXCEPTION WHEN lock_not_available THEN
        -- (the subtransaction's end restored lock_timeout)
        BEGIN
            SELECT count(*) FILTER (WHERE pg_terminate_backend(lk.pid)) INTO ended
              FROM pg_locks lk
             WHERE lk.locktype = 'advisory' AND lk.classid = v_key1 AND lk.objid = v_key2
               AND lk.objsubid = 2 AND lk.granted AND lk.pid <> pg_backend_pid()
               AND lk.database = (SELECT oid FROM pg_database WHERE datname = current_database());
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'lease-agent: cannot end the transactions that hold the fence of epoch % of cluster %: grant pg_signal_backend to the agent''s role',
                          p_epoch, p_cluster;
        END;
        UPDATE lease_agent.term SET ended_at = clock_timestamp()
         WHERE cluster = p_cluster AND epoch = p_epoch;
    END;
    waited_ms := floor(extract(epoch FROM clock_timestamp() - v_start) * 1000)::bigint;
END;
$$;

-- The notification channel of a cluster (schema 5): one per cluster, so that an agent's
-- connection receives its own cluster's notifications only. (PostgreSQL 15 still wakes
-- every listening backend of the database for every NOTIFY, whatever its channel; that
-- is why renewals notify nobody, see the top of this file.) A hash: a channel name is an
-- identifier of at most 63 bytes, a cluster name may be longer.
CREATE OR REPLACE FUNCTION lease_agent.channel(p_cluster text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'lease_agent.' || left(md5(p_cluster), 24) $$;

-- The own channel of one incarnation of an agent (schema 6), the only channel an agent of
-- protocol 6 listens on: a hand-off wakes its target alone, not every agent of the cluster
-- (with 300 agents, 299 processes woken for nothing, on the machine the successor shares).
CREATE OR REPLACE FUNCTION lease_agent.channel(p_cluster text, p_incarnation text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'lease_agent.' || left(md5(p_cluster || E'\n' || p_incarnation), 24) $$;

-- The incarnations of the live agents of protocol 6 of a cluster: whom a 'free' is for.
CREATE OR REPLACE FUNCTION lease_agent.own_listeners(p_cluster text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(nd.incarnation) FROM lease_agent.node nd
     WHERE nd.cluster = p_cluster AND nd.protocol >= 6 AND nd.left_at IS NULL
       AND nd.expires_at > clock_timestamp()
$$;

-- The notification (schema 5): fields separated by newlines (names hold no control
-- characters): '<version>\n<kind>\n<cluster>' and, for kind
--   'handed':     '\n<epoch>\n<holder incarnation>\n<how: handed|switchover>'
--   'switchover': '\n<target node>\n<epoch of the master asked>'
--   'free':       nothing more.
-- Sent on the cluster's channel (agents of protocol 5, and observers such as the
-- benchmark) and, schema 6, on the own channel of each incarnation of p_to (agents of
-- protocol 6). One transaction's notifications are delivered at its commit,
-- in order, and a listener that hears one channel misses nothing it is meant to act on:
-- a standby that is not told of a hand-off sees the new version at its next heartbeat,
-- and watches it from then on, later than it would from the notification (sql/PROTOCOL.md,
-- "Hand-off"). (PL/pgSQL here and in next_in_line, not SQL: PL/pgSQL keeps its plans for
-- the session, an SQL function of this shape is planned again at every call.)
-- lease_agent.announce of schema 5 (the cluster's channel alone) is replaced by it.
DROP FUNCTION IF EXISTS lease_agent.announce(text, bigint, text, text);
CREATE OR REPLACE FUNCTION lease_agent.announce_to(p_cluster text, p_version bigint, p_kind text,
                                                   p_more text, p_to text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_payload text := p_version || E'\n' || p_kind || E'\n' || p_cluster || coalesce(E'\n' || p_more, '');
    v_to      text;
BEGIN
    PERFORM pg_notify(lease_agent.channel(p_cluster), v_payload);
    FOREACH v_to IN ARRAY coalesce(p_to, '{}'::text[]) LOOP
        PERFORM pg_notify(lease_agent.channel(p_cluster, v_to), v_payload);
    END LOOP;
END;
$$;

-- The hand-off (schema 5): the master that stopped acting as master (a clean stop, or a
-- switchover) gives its lease directly to p_to, in one transaction: it ends its own term
-- (the fence, as at any acquisition), starts term epoch + 1 for p_to, and notifies
-- 'handed'. p_to is then master from that notification on, without a round trip of its
-- own, until the send time of its latest heartbeat that was answered before this commit
-- + ttl - margin (sql/PROTOCOL.md, "Hand-off"). REQUIRES: the caller holds the lease row
-- FOR UPDATE, its incarnation is the holder, and its agent has seen the server's life
-- for ttl; p_to is live and speaks protocol 5. The lease's expires_at is p_to's
-- registration's (its last heartbeat + its ttl), a bound on its deadline.
CREATE OR REPLACE FUNCTION lease_agent.hand_off(p_cluster text, p_to text, p_how text,
                                                OUT o_epoch bigint, OUT o_version bigint,
                                                OUT o_fence_wait_ms bigint, OUT o_fence_ended integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := clock_timestamp();
    l      lease_agent.lease%ROWTYPE;
    n      lease_agent.node%ROWTYPE;
BEGIN
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    SELECT * INTO n FROM lease_agent.node WHERE cluster = p_cluster AND node = p_to;
    SELECT * INTO o_fence_wait_ms, o_fence_ended
      FROM lease_agent.end_term(p_cluster, l.epoch, coalesce(l.ttl_ms, 10000) / 10);
    UPDATE lease_agent.lease
       SET holder = n.node, holder_incarnation = n.incarnation, epoch = epoch + 1,
           version = version + 1, acquired_at = v_now, renewed_at = n.heartbeat_at,
           expires_at = n.expires_at, renew_ms = NULL, handed_at = v_now, handed_how = p_how,
           switchover_to = NULL, switchover_until = NULL, reserved_for = NULL, reserved_until = NULL
     WHERE cluster = p_cluster
    RETURNING epoch, version INTO o_epoch, o_version;
    INSERT INTO lease_agent.term (cluster, epoch, holder, holder_incarnation, began_at)
         VALUES (p_cluster, o_epoch, n.node, n.incarnation, v_now)
    ON CONFLICT (cluster, epoch) DO UPDATE
        SET holder = EXCLUDED.holder, holder_incarnation = EXCLUDED.holder_incarnation,
            began_at = EXCLUDED.began_at, ended_at = NULL;
    PERFORM lease_agent.announce_to(p_cluster, o_version, 'handed',
                                    o_epoch || E'\n' || n.incarnation || E'\n' || p_how,
                                    CASE WHEN n.protocol >= 6 THEN ARRAY[n.incarnation] END);
END;
$$;

-- The first live node in line after p_except (for a hand-off and for the standbys'
-- answers): by (registered_at, node), among registrations unexpired and not left.
CREATE OR REPLACE FUNCTION lease_agent.next_in_line(p_cluster text, p_except text)
RETURNS lease_agent.node LANGUAGE plpgsql STABLE AS $$
DECLARE
    n lease_agent.node%ROWTYPE;
BEGIN
    SELECT * INTO n FROM lease_agent.node nd
     WHERE nd.cluster = p_cluster AND nd.expires_at > clock_timestamp() AND nd.left_at IS NULL
       AND nd.node IS DISTINCT FROM p_except
     ORDER BY nd.registered_at, nd.node LIMIT 1;
    RETURN n;
END;
$$;

DROP FUNCTION IF EXISTS lease_agent.beat(integer, text, text, text, text, integer, bigint, bigint, boolean);
CREATE OR REPLACE FUNCTION lease_agent.beat(
    p_protocol integer, p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean,
    p_renew_ms integer)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer,
               o_next_in_line text, o_renewed_ago_ms bigint, o_holder_renew_ms integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_ttl      interval := make_interval(secs => p_ttl_ms / 1000.0);
    n          lease_agent.node%ROWTYPE;
    l          lease_agent.lease%ROWTYPE;
    v_first    text;
    v_mine     boolean;
    v_reserved boolean;
    v_handed   boolean := false;
BEGIN
    o_status := 'ok';
    o_acquired := false;
    o_db_now_ms := extract(epoch FROM v_now) * 1000;

    -- 1. register or renew this node
    INSERT INTO lease_agent.node (cluster, node, address, incarnation, registered_at, heartbeat_at,
                                  expires_at, protocol)
         VALUES (p_cluster, p_node, p_address, p_incarnation, v_now, v_now, v_now + v_ttl, p_protocol)
    ON CONFLICT (cluster, node) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO n FROM lease_agent.node
         WHERE cluster = p_cluster AND node = p_node FOR UPDATE;
        IF n.incarnation <> p_incarnation AND n.expires_at > v_now THEN
            o_status := 'duplicate';
            o_detail := format('incarnation %s, last heartbeat %s', n.incarnation, n.heartbeat_at);
            RETURN NEXT;
            RETURN;
        END IF;
        IF n.expires_at <= v_now AND n.left_at IS NULL AND NOT EXISTS (
               SELECT 1 FROM lease_agent.node nd
                WHERE nd.cluster = p_cluster AND nd.node <> p_node AND nd.expires_at > v_now) THEN
            -- The first heartbeat after a silence of the whole cluster (an outage of the
            -- database, or of every agent): for ttl from now, the nodes that were live
            -- when it began keep their place although their registrations lapsed.
            UPDATE lease_agent.lease le
               SET resumed_at = v_now,
                   silent_since = (SELECT max(nd.heartbeat_at) FROM lease_agent.node nd
                                    WHERE nd.cluster = p_cluster)
             WHERE le.cluster = p_cluster;
        END IF;
        IF n.incarnation <> p_incarnation THEN
            -- a restart: the back of the line
            UPDATE lease_agent.node
               SET address = p_address, incarnation = p_incarnation, registered_at = v_now,
                   heartbeat_at = v_now, expires_at = v_now + v_ttl, protocol = p_protocol,
                   left_at = NULL
             WHERE cluster = p_cluster AND node = p_node;
        ELSE
            -- the same process: its place in the line is kept, even after a lapse
            UPDATE lease_agent.node
               SET address = p_address, heartbeat_at = v_now, expires_at = v_now + v_ttl,
                   protocol = p_protocol, left_at = NULL
             WHERE cluster = p_cluster AND node = p_node;
        END IF;
    END IF;

    -- 2./3. read the lease; lock it only when this call may change it
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    IF NOT FOUND THEN
        INSERT INTO lease_agent.lease (cluster) VALUES (p_cluster) ON CONFLICT (cluster) DO NOTHING;
        SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    END IF;
    v_mine := coalesce(l.holder = p_node AND l.holder_incarnation = p_incarnation, false);
    IF v_mine OR l.holder IS NULL OR l.version = p_watched_version THEN
        SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster FOR UPDATE;
        v_mine := coalesce(l.holder = p_node AND l.holder_incarnation = p_incarnation, false);
        v_reserved := l.holder IS NULL AND l.reserved_for IS NOT NULL AND l.reserved_until > v_now;
        IF v_mine AND p_epoch IS DISTINCT FROM l.epoch AND NOT p_may_acquire THEN
            v_mine := false;  -- ours, but no new term yet: the row stays as it is
        ELSIF v_mine THEN
            IF p_epoch IS DISTINCT FROM l.epoch AND l.handed_at IS NOT NULL
               AND (p_epoch IS NULL OR p_epoch < l.epoch) THEN
                -- The first heartbeat of the node the lease was handed to, sent before it
                -- heard the hand-off: its term began with the hand-off (no new epoch).
                o_acquired := true;
                o_acquired_how := l.handed_how;
                v_handed := true;
            ELSIF p_epoch IS DISTINCT FROM l.epoch THEN
                SELECT * INTO o_fence_wait_ms, o_fence_ended
                  FROM lease_agent.end_term(p_cluster, l.epoch, p_ttl_ms / 10);
                l.epoch := l.epoch + 1;
                l.acquired_at := v_now;
                o_acquired := true;
                o_acquired_how := 'recovered';
                l.switchover_to := NULL;  -- a request was for the term that ended
            END IF;
            l.version := l.version + 1;
            l.expires_at := v_now + v_ttl;
        ELSIF p_may_acquire AND (l.holder IS NULL OR l.version = p_watched_version) THEN
            IF v_reserved THEN
                v_first := l.reserved_for;  -- a switchover's target, alone
            ELSE
                -- The first in line: live, or (for ttl after a silence of the cluster)
                -- live when the silence began and not left since.
                SELECT nd.node INTO v_first FROM lease_agent.node nd
                 WHERE nd.cluster = p_cluster
                   AND (nd.expires_at > v_now
                        OR (v_now < l.resumed_at + v_ttl AND nd.left_at IS NULL
                            AND nd.expires_at > l.silent_since))
                 ORDER BY nd.registered_at, nd.node LIMIT 1;
            END IF;
            IF v_first = p_node THEN
                SELECT * INTO o_fence_wait_ms, o_fence_ended
                  FROM lease_agent.end_term(p_cluster, l.epoch, p_ttl_ms / 10);
                o_acquired_how := CASE WHEN v_reserved THEN 'switchover'
                                       WHEN l.holder IS NULL THEN 'free' ELSE 'expired' END;
                l.holder := p_node;
                l.holder_incarnation := p_incarnation;
                l.epoch := l.epoch + 1;
                l.version := l.version + 1;
                l.acquired_at := v_now;
                l.expires_at := v_now + v_ttl;
                l.switchover_to := NULL;
                l.reserved_for := NULL;
                o_acquired := true;
                v_mine := true;
            END IF;
        END IF;
        IF v_mine THEN
            UPDATE lease_agent.lease
               SET holder = l.holder, holder_incarnation = l.holder_incarnation, epoch = l.epoch,
                   version = l.version, acquired_at = l.acquired_at, expires_at = l.expires_at,
                   renewed_at = v_now, renew_ms = p_renew_ms, handed_at = NULL, handed_how = NULL,
                   ttl_ms = p_ttl_ms, switchover_to = l.switchover_to,
                   switchover_until = CASE WHEN l.switchover_to IS NULL THEN NULL ELSE l.switchover_until END,
                   reserved_for = l.reserved_for,
                   reserved_until = CASE WHEN l.reserved_for IS NULL THEN NULL ELSE l.reserved_until END
             WHERE cluster = p_cluster;
            IF o_acquired AND NOT v_handed THEN  -- (a hand-off recorded its term)
                INSERT INTO lease_agent.term (cluster, epoch, holder, holder_incarnation, began_at)
                     VALUES (p_cluster, l.epoch, p_node, p_incarnation, v_now)
                ON CONFLICT (cluster, epoch) DO UPDATE
                    SET holder = EXCLUDED.holder, holder_incarnation = EXCLUDED.holder_incarnation,
                        began_at = EXCLUDED.began_at, ended_at = NULL;
            END IF;
            -- 4. Agents of schema 4 and before hear every write of the row on the shared
            --    channel. Schema 5 announces renewals and acquisitions to nobody: the next
            --    in line sees them with the heartbeat it times just after them.
            IF p_protocol < 5 THEN
                PERFORM pg_notify('lease_agent', l.version || ' held ' || p_cluster);
            END IF;
        END IF;
    END IF;

    -- 5. answer
    o_role := CASE WHEN v_mine THEN 'master' ELSE 'standby' END;
    o_holder := l.holder;
    SELECT nd.address INTO o_holder_address FROM lease_agent.node nd
     WHERE nd.cluster = p_cluster AND nd.node = l.holder;
    o_epoch := l.epoch;
    o_version := l.version;
    o_first_in_line := v_first;
    o_lease_left_ms := CASE WHEN l.holder IS NULL THEN 0
                            ELSE greatest(0, (extract(epoch FROM l.expires_at - v_now) * 1000)::bigint) END;
    IF v_mine AND l.switchover_to IS NOT NULL AND l.switchover_until > v_now THEN
        o_switchover_to := l.switchover_to;
    END IF;
    IF NOT v_mine AND l.holder IS NULL AND l.reserved_for IS NOT NULL AND l.reserved_until > v_now THEN
        o_reserved_for := l.reserved_for;
        o_reserved_left_ms := ceil(extract(epoch FROM l.reserved_until - v_now) * 1000)::bigint;
    END IF;
    IF NOT v_mine AND l.holder IS NOT NULL THEN
        -- For the standbys: who is next in line, and how long ago the holder last wrote the
        -- row by the database's clock (for the timing of the next in line's heartbeat only).
        o_next_in_line := (lease_agent.next_in_line(p_cluster, l.holder)).node;
        o_renewed_ago_ms := greatest(0, floor(extract(epoch FROM clock_timestamp() - l.renewed_at) * 1000))::bigint;
        o_holder_renew_ms := l.renew_ms;
    END IF;
    RETURN NEXT;
END;
$$;

-- The heartbeat of agents of schema 6: all of beat's columns. p_renew_ms is this agent's
-- renew, recorded while it holds the lease. Protocol 6: the agent listens on its own
-- channel only (lease_agent.channel(cluster, incarnation)).
CREATE OR REPLACE FUNCTION lease_agent.heartbeat_v6(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean,
    p_renew_ms integer)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer,
               o_next_in_line text, o_renewed_ago_ms bigint, o_holder_renew_ms integer)
LANGUAGE sql AS $$
    SELECT * FROM lease_agent.beat(6, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                                   p_epoch, p_watched_version, p_may_acquire, p_renew_ms);
$$;

-- The heartbeat of agents of schema 5, with its signature and columns unchanged: they
-- listen on the cluster's channel.
CREATE OR REPLACE FUNCTION lease_agent.heartbeat_v5(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean,
    p_renew_ms integer)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer,
               o_next_in_line text, o_renewed_ago_ms bigint, o_holder_renew_ms integer)
LANGUAGE sql AS $$
    SELECT * FROM lease_agent.beat(5, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                                   p_epoch, p_watched_version, p_may_acquire, p_renew_ms);
$$;

-- The heartbeat of agents of schema 4, with its signature and columns unchanged.
CREATE OR REPLACE FUNCTION lease_agent.heartbeat_v4(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer)
LANGUAGE sql AS $$
    SELECT o_status, o_role, o_holder, o_holder_address, o_epoch, o_version, o_acquired,
           o_first_in_line, o_lease_left_ms, o_db_now_ms, o_detail, o_acquired_how,
           o_switchover_to, o_reserved_for, o_reserved_left_ms, o_fence_wait_ms, o_fence_ended
      FROM lease_agent.beat(4, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                            p_epoch, p_watched_version, p_may_acquire, NULL);
$$;

-- The heartbeat of agents of schema 3, with its signature and columns unchanged.
CREATE OR REPLACE FUNCTION lease_agent.heartbeat_v3(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint)
LANGUAGE sql AS $$
    SELECT o_status, o_role, o_holder, o_holder_address, o_epoch, o_version, o_acquired,
           o_first_in_line, o_lease_left_ms, o_db_now_ms, o_detail, o_acquired_how,
           o_switchover_to, o_reserved_for, o_reserved_left_ms
      FROM lease_agent.beat(3, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                            p_epoch, p_watched_version, p_may_acquire, NULL);
$$;

-- The heartbeat of agents of schema 2, with its signature and columns unchanged. Such an
-- agent keeps the rules above: it takes a free lease reserved for another node no more
-- than a node of schema 3 does. It does not hear switchover requests, so a switchover
-- refuses a master of protocol 2.
CREATE OR REPLACE FUNCTION lease_agent.heartbeat(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean DEFAULT true)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text)
LANGUAGE sql AS $$
    SELECT o_status, o_role, o_holder, o_holder_address, o_epoch, o_version, o_acquired,
           o_first_in_line, o_lease_left_ms, o_db_now_ms, o_detail
      FROM lease_agent.beat(2, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                            p_epoch, p_watched_version, p_may_acquire, NULL);
$$;

-- The clean stop of an agent, after it stopped acting as master (schema 5): if this
-- incarnation holds the lease, hands it off to the next live node in line (the hand-off
-- above: that node is master from the notification on), or, when there is none, it
-- speaks protocol 4 or less, or p_may_hand_off is false, sets it free (holder null,
-- expiry now, notify 'free', on the cluster's channel and on the shared one of schema 4).
-- Then marks the node gone (left_at: it gives up its place in the line).
-- p_may_hand_off: the agent has seen the server's life for ttl (its may_acquire): a
-- database that lost commits may show this node a lease that another master held in
-- the lost part, and only a free lease waits for the takers' own ttl there.
-- Answers whether a lease was given up, to whom it was handed (null: set free) and the
-- new epoch and version. Idempotent.
CREATE OR REPLACE FUNCTION lease_agent.leave(p_cluster text, p_node text, p_incarnation text,
                                             p_may_hand_off boolean)
RETURNS TABLE (released boolean, handed_to text, epoch bigint, version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    l       lease_agent.lease%ROWTYPE;
    s       lease_agent.node%ROWTYPE;
    h       record;
BEGIN
    released := false;
    SELECT * INTO l FROM lease_agent.lease le
     WHERE le.cluster = p_cluster AND le.holder = p_node AND le.holder_incarnation = p_incarnation
       FOR UPDATE;
    IF FOUND THEN
        released := true;
        IF p_may_hand_off THEN
            s := lease_agent.next_in_line(p_cluster, p_node);
        END IF;
        IF s.node IS NOT NULL AND s.protocol >= 5 THEN
            SELECT * INTO h FROM lease_agent.hand_off(p_cluster, s.node, 'handed');
            handed_to := s.node;
            epoch := h.o_epoch;
            version := h.o_version;
        ELSE
            UPDATE lease_agent.lease le
               SET holder = NULL, holder_incarnation = NULL, expires_at = v_now,
                   version = le.version + 1, switchover_to = NULL, switchover_until = NULL,
                   handed_at = NULL, handed_how = NULL
             WHERE le.cluster = p_cluster
            RETURNING le.epoch, le.version INTO epoch, version;
            PERFORM pg_notify('lease_agent', version || ' free ' || p_cluster);
            PERFORM lease_agent.announce_to(p_cluster, version, 'free', NULL,
                                            lease_agent.own_listeners(p_cluster));
        END IF;
    END IF;
    UPDATE lease_agent.node SET expires_at = least(expires_at, v_now), left_at = v_now
     WHERE cluster = p_cluster AND node = p_node AND incarnation = p_incarnation;
    RETURN NEXT;
END;
$$;

-- The clean stop of agents of schema 4 and before: always a release.
CREATE OR REPLACE FUNCTION lease_agent.leave(p_cluster text, p_node text, p_incarnation text)
RETURNS boolean LANGUAGE sql AS $$
    SELECT released FROM lease_agent.leave(p_cluster, p_node, p_incarnation, false);
$$;

-- Switchover, step 1: the request, by an operator (`lease-agent switchover`) or any
-- client. Names the node the master is to hand the lease to: p_to, or when null the first
-- live node in line other than the master. With p_from, refuses unless that node is the
-- master now. Raises, with one sentence that names which and who is master:
--   LA002 no master now; LA003 the target is unknown, gone or none is left;
--   LA004 the master's agent cannot hand over (protocol 2); LA005 p_from is not the master.
-- Answers the target, the master and its epoch, and whether a request was made
-- (false: the target already is the master; nothing changes). The master hears the
-- request at once (the 'switchover' notification on the cluster's channel and, schema 6, on
-- the master's own, which names
-- the target and the master's epoch; '<version> switchover <cluster>' on the shared one
-- for agents of schema 4 and before) and in its next heartbeat.
-- The request lapses after the master's ttl if the master does not act on it.
CREATE OR REPLACE FUNCTION lease_agent.switchover(p_cluster text, p_to text DEFAULT NULL,
                                                  p_from text DEFAULT NULL)
RETURNS TABLE (target text, master text, epoch bigint, requested boolean,
               requested_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := clock_timestamp();
    l      lease_agent.lease%ROWTYPE;
    n      lease_agent.node%ROWTYPE;
    m      lease_agent.node%ROWTYPE;
BEGIN
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster FOR UPDATE;
    IF NOT FOUND OR l.holder IS NULL OR l.expires_at <= v_now THEN
        RAISE EXCEPTION 'no master in cluster % now%', p_cluster,
              CASE WHEN l.reserved_for IS NOT NULL AND l.reserved_until > v_now
                   THEN format(' (the lease is free, reserved for %s)', l.reserved_for) ELSE '' END
            USING ERRCODE = 'LA002';
    END IF;
    master := l.holder;
    epoch := l.epoch;
    IF p_from IS NOT NULL AND p_from IS DISTINCT FROM l.holder THEN
        RAISE EXCEPTION 'node % is not the master of cluster % (the master is % at epoch %)',
                        p_from, p_cluster, l.holder, l.epoch USING ERRCODE = 'LA005';
    END IF;
    IF p_to IS NULL THEN
        SELECT * INTO n FROM lease_agent.node nd
         WHERE nd.cluster = p_cluster AND nd.expires_at > v_now AND nd.node <> l.holder
         ORDER BY nd.registered_at, nd.node LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no live standby in cluster % to hand over to (the master is % at epoch %)',
                            p_cluster, l.holder, l.epoch USING ERRCODE = 'LA003';
        END IF;
    ELSE
        SELECT * INTO n FROM lease_agent.node nd WHERE nd.cluster = p_cluster AND nd.node = p_to;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'node % is unknown in cluster % (the master is % at epoch %)',
                            p_to, p_cluster, l.holder, l.epoch USING ERRCODE = 'LA003';
        END IF;
    END IF;
    target := n.node;
    IF n.node = l.holder THEN
        requested := false;  -- already the master: nothing changes
        RETURN NEXT;
        RETURN;
    END IF;
    IF n.expires_at <= v_now THEN
        RAISE EXCEPTION 'node % of cluster % is gone, not a live standby (last heartbeat %; the master is % at epoch %)',
                        n.node, p_cluster, n.heartbeat_at, l.holder, l.epoch USING ERRCODE = 'LA003';
    END IF;
    SELECT * INTO m FROM lease_agent.node nd WHERE nd.cluster = p_cluster AND nd.node = l.holder;
    IF NOT FOUND OR m.protocol < 3 THEN
        RAISE EXCEPTION 'the master % of cluster % runs an agent that cannot hand over (protocol %); upgrade it first',
                        l.holder, p_cluster, coalesce(m.protocol, 0) USING ERRCODE = 'LA004';
    END IF;
    UPDATE lease_agent.lease
       SET switchover_to = n.node, switchover_requested_at = v_now,
           switchover_until = v_now + make_interval(secs => coalesce(l.ttl_ms, 10000) / 1000.0)
     WHERE cluster = p_cluster;
    PERFORM pg_notify('lease_agent', l.version || ' switchover ' || p_cluster);
    PERFORM lease_agent.announce_to(p_cluster, l.version, 'switchover', n.node || E'\n' || l.epoch,
                                    CASE WHEN m.protocol >= 6 THEN ARRAY[l.holder_incarnation] END);
    requested := true;
    requested_at := v_now;
    RETURN NEXT;
END;
$$;

-- Switchover, step 2: the master, after it stopped acting as master (503, on-demote,
-- handover-delay), gives the lease to the requested node. Schema 5: a target of
-- protocol 5, when p_may_hand_off (as for leave), gets it by the hand-off above, at
-- once and without a round trip of its own (direct). Otherwise the lease is set free,
-- reserved for the target for ttl: until then only that node may take it (at once:
-- notify 'free'); after that the first in line, as after any release. Also renews the
-- node's heartbeat. Answers whether the lease was handed over, to whom, and how;
-- nothing changes (false) when this incarnation does not hold the lease, no request
-- stands, or its target is gone: the master then takes a new term of its own lease at
-- its next heartbeat.
CREATE OR REPLACE FUNCTION lease_agent.hand_over(p_cluster text, p_node text, p_incarnation text,
                                                 p_ttl_ms integer, p_may_hand_off boolean)
RETURNS TABLE (handed_over boolean, target text, version bigint, direct boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := clock_timestamp();
    v_ttl  interval := make_interval(secs => p_ttl_ms / 1000.0);
    l      lease_agent.lease%ROWTYPE;
    t      lease_agent.node%ROWTYPE;
BEGIN
    UPDATE lease_agent.node SET heartbeat_at = v_now, expires_at = v_now + v_ttl
     WHERE cluster = p_cluster AND node = p_node AND incarnation = p_incarnation;
    SELECT * INTO l FROM lease_agent.lease le WHERE le.cluster = p_cluster FOR UPDATE;
    handed_over := false;
    direct := false;
    target := l.switchover_to;
    version := l.version;
    SELECT * INTO t FROM lease_agent.node nd
     WHERE nd.cluster = p_cluster AND nd.node = l.switchover_to AND nd.expires_at > v_now;
    IF l.holder = p_node AND l.holder_incarnation = p_incarnation
       AND l.switchover_to IS NOT NULL AND l.switchover_until > v_now AND t.node IS NOT NULL THEN
        IF p_may_hand_off AND t.protocol >= 5 THEN
            SELECT o_version INTO version FROM lease_agent.hand_off(p_cluster, t.node, 'switchover');
            direct := true;
        ELSE
            UPDATE lease_agent.lease le
               SET holder = NULL, holder_incarnation = NULL, expires_at = v_now, version = le.version + 1,
                   reserved_for = l.switchover_to, reserved_until = v_now + v_ttl,
                   switchover_to = NULL, switchover_until = NULL
             WHERE le.cluster = p_cluster
            RETURNING le.version INTO version;
            PERFORM pg_notify('lease_agent', version || ' free ' || p_cluster);
            PERFORM lease_agent.announce_to(p_cluster, version, 'free', NULL,
                                            lease_agent.own_listeners(p_cluster));
        END IF;
        handed_over := true;
    END IF;
    RETURN NEXT;
END;
$$;

-- The hand-over of agents of schema 4 and before: always the reservation.
CREATE OR REPLACE FUNCTION lease_agent.hand_over(p_cluster text, p_node text, p_incarnation text,
                                                 p_ttl_ms integer)
RETURNS TABLE (handed_over boolean, target text, version bigint)
LANGUAGE sql AS $$
    SELECT h.handed_over, h.target, h.version
      FROM lease_agent.hand_over(p_cluster, p_node, p_incarnation, p_ttl_ms, false) h;
$$;

-- The agent's rehearsal, once per connection (schema 5): runs a registration, an
-- acquisition, a switchover's hand-over and a clean stop's hand-off on a cluster of its
-- own, and undoes all of it (a subtransaction rolled back: no row and no notification is
-- left). PL/pgSQL compiles a function, and plans each of its statements, at its first call
-- in a session; without this the clean stop, which comes once per connection, would pay
-- for that, with the cluster waiting for its next master.
CREATE OR REPLACE FUNCTION lease_agent.rehearse() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c text := 'lease-agent rehearsal ' || pg_backend_pid();
BEGIN
    BEGIN
        PERFORM lease_agent.beat(6, c, 'a', 'a', '', 60000, NULL, NULL, true, 500);
        PERFORM lease_agent.beat(6, c, 'b', 'b', '', 60000, NULL, NULL, true, 500);
        PERFORM lease_agent.switchover(c, 'b');
        PERFORM lease_agent.hand_over(c, 'a', 'a', 60000, true);
        PERFORM lease_agent.leave(c, 'b', 'b', true);
        RAISE EXCEPTION 'rehearsal' USING ERRCODE = 'LA000';
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- all of it undone (LA000), or it failed: only a speed-up is lost
    END;
END;
$$;

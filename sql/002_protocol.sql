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
--   4. notify channel lease_agent of every change of the lease row
--      ('<version> held <cluster>', or 'free' after a release);
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
-- lease_agent.heartbeat_v3 is what agents of schema 3 call, lease_agent.heartbeat what
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

DROP FUNCTION IF EXISTS lease_agent.beat(integer, text, text, text, text, integer, bigint, bigint, boolean);
CREATE OR REPLACE FUNCTION lease_agent.beat(
    p_protocol integer, p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_ttl      interval := make_interval(secs => p_ttl_ms / 1000.0);
    n          lease_agent.node%ROWTYPE;
    l          lease_agent.lease%ROWTYPE;
    v_first    text;
    v_mine     boolean;
    v_reserved boolean;
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
            IF p_epoch IS DISTINCT FROM l.epoch THEN
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
                   ttl_ms = p_ttl_ms, switchover_to = l.switchover_to,
                   switchover_until = CASE WHEN l.switchover_to IS NULL THEN NULL ELSE l.switchover_until END,
                   reserved_for = l.reserved_for,
                   reserved_until = CASE WHEN l.reserved_for IS NULL THEN NULL ELSE l.reserved_until END
             WHERE cluster = p_cluster;
            IF o_acquired THEN
                INSERT INTO lease_agent.term (cluster, epoch, holder, holder_incarnation, began_at)
                     VALUES (p_cluster, l.epoch, p_node, p_incarnation, v_now)
                ON CONFLICT (cluster, epoch) DO UPDATE
                    SET holder = EXCLUDED.holder, holder_incarnation = EXCLUDED.holder_incarnation,
                        began_at = EXCLUDED.began_at, ended_at = NULL;
            END IF;
            -- 4. every change of the row is announced
            PERFORM pg_notify('lease_agent', l.version || ' held ' || p_cluster);
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
    RETURN NEXT;
END;
$$;

-- The heartbeat of agents of schema 4: all of beat's columns.
CREATE OR REPLACE FUNCTION lease_agent.heartbeat_v4(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text,
               o_acquired_how text, o_switchover_to text, o_reserved_for text,
               o_reserved_left_ms bigint, o_fence_wait_ms bigint, o_fence_ended integer)
LANGUAGE sql AS $$
    SELECT * FROM lease_agent.beat(4, p_cluster, p_node, p_incarnation, p_address, p_ttl_ms,
                                   p_epoch, p_watched_version, p_may_acquire);
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
                            p_epoch, p_watched_version, p_may_acquire);
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
                            p_epoch, p_watched_version, p_may_acquire);
$$;

-- The clean stop of an agent, after it stopped acting as master: releases the lease if
-- this incarnation holds it (holder null, expiry now, notify) and then marks the node
-- gone (left_at: it gives up its place in the line). Returns true when a lease was released. Idempotent.
CREATE OR REPLACE FUNCTION lease_agent.leave(p_cluster text, p_node text, p_incarnation text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_version  bigint;
BEGIN
    UPDATE lease_agent.lease
       SET holder = NULL, holder_incarnation = NULL, expires_at = v_now, version = version + 1,
           switchover_to = NULL, switchover_until = NULL
     WHERE cluster = p_cluster AND holder = p_node AND holder_incarnation = p_incarnation
    RETURNING version INTO v_version;
    IF FOUND THEN
        PERFORM pg_notify('lease_agent', v_version || ' free ' || p_cluster);
    END IF;
    UPDATE lease_agent.node SET expires_at = least(expires_at, v_now), left_at = v_now
     WHERE cluster = p_cluster AND node = p_node AND incarnation = p_incarnation;
    RETURN v_version IS NOT NULL;
END;
$$;

-- Switchover, step 1: the request, by an operator (`lease-agent switchover`) or any
-- client. Names the node the master is to hand the lease to: p_to, or when null the first
-- live node in line other than the master. With p_from, refuses unless that node is the
-- master now. Raises, with one sentence that names which and who is master:
--   LA002 no master now; LA003 the target is unknown, gone or none is left;
--   LA004 the master's agent cannot hand over (protocol 2); LA005 p_from is not the master.
-- Answers the target, the master and its epoch, and whether a request was made
-- (false: the target already is the master; nothing changes). The master hears the
-- request at once (notify '<version> switchover <cluster>') and in its next heartbeat.
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
    requested := true;
    requested_at := v_now;
    RETURN NEXT;
END;
$$;

-- Switchover, step 2: the master, after it stopped acting as master (503, on-demote,
-- handover-delay), frees the lease reserved for the requested node, for ttl: until then
-- only that node may take it (at once: notify '<version> free <cluster>'); after that
-- the first in line, as after any release. Also renews the node's heartbeat. Answers
-- whether the lease was handed over and to whom; nothing changes (false) when this
-- incarnation does not hold the lease, no request stands, or its target is gone: the
-- master then takes a new term of its own lease at its next heartbeat.
CREATE OR REPLACE FUNCTION lease_agent.hand_over(p_cluster text, p_node text, p_incarnation text,
                                                 p_ttl_ms integer)
RETURNS TABLE (handed_over boolean, target text, version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := clock_timestamp();
    v_ttl  interval := make_interval(secs => p_ttl_ms / 1000.0);
    l      lease_agent.lease%ROWTYPE;
BEGIN
    UPDATE lease_agent.node SET heartbeat_at = v_now, expires_at = v_now + v_ttl
     WHERE cluster = p_cluster AND node = p_node AND incarnation = p_incarnation;
    SELECT * INTO l FROM lease_agent.lease le WHERE le.cluster = p_cluster FOR UPDATE;
    handed_over := false;
    target := l.switchover_to;
    version := l.version;
    IF FOUND AND l.holder = p_node AND l.holder_incarnation = p_incarnation
       AND l.switchover_to IS NOT NULL AND l.switchover_until > v_now
       AND EXISTS (SELECT 1 FROM lease_agent.node nd WHERE nd.cluster = p_cluster
                      AND nd.node = l.switchover_to AND nd.expires_at > v_now) THEN
        UPDATE lease_agent.lease le
           SET holder = NULL, holder_incarnation = NULL, expires_at = v_now, version = le.version + 1,
               reserved_for = l.switchover_to, reserved_until = v_now + v_ttl,
               switchover_to = NULL, switchover_until = NULL
         WHERE le.cluster = p_cluster
        RETURNING le.version INTO version;
        PERFORM pg_notify('lease_agent', version || ' free ' || p_cluster);
        handed_over := true;
    END IF;
    RETURN NEXT;
END;
$$;

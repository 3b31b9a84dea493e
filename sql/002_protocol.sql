-- lease-agent protocol: the heartbeat (register, renew, acquire, answer in one statement)
-- and the leave of a clean stop. The safety argument is in sql/PROTOCOL.md.

-- One heartbeat of one agent, in one statement and one transaction:
--   1. register this node, or renew its heartbeat; refuse a name held by another live
--      incarnation (o_status 'duplicate');
--   2. renew the lease if this incarnation holds it (a lease of ours at an epoch we did
--      not claim, e.g. after an acquisition whose answer was lost, starts a new epoch);
--   3. otherwise acquire it, at epoch + 1, if it is free or still at the version this
--      agent has watched unchanged for ttl on its own clock (p_watched_version), and this
--      node is the first live node by (registered_at, node);
--   4. notify channel lease_agent of every change of the lease row
--      ('<version> held <cluster>', or 'free' after a release);
--   5. answer role, holder, epoch and version.
-- p_epoch is the epoch this agent believes it holds as master, null when standby.
-- p_may_acquire false: this call starts no term (neither an acquisition nor a new epoch
-- of a lease of ours); a renewal at p_epoch goes on. An agent passes false until its
-- connection is ttl old: a database that lost acknowledged commits (a crash with
-- synchronous_commit off, a failover to an asynchronous standby) may show an older
-- lease row than a master acted on, and it lost every connection with them.
-- (Schema version 1 had no p_may_acquire.)
DROP FUNCTION IF EXISTS lease_agent.heartbeat(text, text, text, text, integer, bigint, bigint);
CREATE OR REPLACE FUNCTION lease_agent.heartbeat(
    p_cluster text, p_node text, p_incarnation text, p_address text,
    p_ttl_ms integer, p_epoch bigint, p_watched_version bigint, p_may_acquire boolean DEFAULT true)
RETURNS TABLE (o_status text, o_role text, o_holder text, o_holder_address text,
               o_epoch bigint, o_version bigint, o_acquired boolean, o_first_in_line text,
               o_lease_left_ms bigint, o_db_now_ms double precision, o_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_ttl      interval := make_interval(secs => p_ttl_ms / 1000.0);
    n          lease_agent.node%ROWTYPE;
    l          lease_agent.lease%ROWTYPE;
    v_first    text;
    v_mine     boolean;
BEGIN
    o_status := 'ok';
    o_acquired := false;
    o_db_now_ms := extract(epoch FROM v_now) * 1000;

    -- 1. register or renew this node
    INSERT INTO lease_agent.node (cluster, node, address, incarnation, registered_at, heartbeat_at, expires_at)
         VALUES (p_cluster, p_node, p_address, p_incarnation, v_now, v_now, v_now + v_ttl)
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
        IF n.incarnation <> p_incarnation OR n.expires_at <= v_now THEN
            -- a restart, or back from the dead: the back of the line
            UPDATE lease_agent.node
               SET address = p_address, incarnation = p_incarnation, registered_at = v_now,
                   heartbeat_at = v_now, expires_at = v_now + v_ttl
             WHERE cluster = p_cluster AND node = p_node;
        ELSE
            UPDATE lease_agent.node
               SET address = p_address, heartbeat_at = v_now, expires_at = v_now + v_ttl
             WHERE cluster = p_cluster AND node = p_node;
        END IF;
    END IF;

    -- 2./3. read the lease; lock it only when this call may change it
    SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    IF NOT FOUND THEN
        INSERT INTO lease_agent.lease (cluster) VALUES (p_cluster) ON CONFLICT (cluster) DO NOTHING;
        SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster;
    END IF;
    v_mine := l.holder = p_node AND l.holder_incarnation = p_incarnation;
    IF v_mine OR l.holder IS NULL OR l.version = p_watched_version THEN
        SELECT * INTO l FROM lease_agent.lease WHERE cluster = p_cluster FOR UPDATE;
        v_mine := l.holder = p_node AND l.holder_incarnation = p_incarnation;
        IF v_mine AND p_epoch IS DISTINCT FROM l.epoch AND NOT p_may_acquire THEN
            v_mine := false;  -- ours, but no new term yet: the row stays as it is
        ELSIF v_mine THEN
            IF p_epoch IS DISTINCT FROM l.epoch THEN
                l.epoch := l.epoch + 1;
                l.acquired_at := v_now;
                o_acquired := true;
            END IF;
            l.version := l.version + 1;
            l.expires_at := v_now + v_ttl;
        ELSIF p_may_acquire AND (l.holder IS NULL OR l.version = p_watched_version) THEN
            SELECT nd.node INTO v_first FROM lease_agent.node nd
             WHERE nd.cluster = p_cluster AND nd.expires_at > v_now
             ORDER BY nd.registered_at, nd.node LIMIT 1;
            IF v_first = p_node THEN
                l.holder := p_node;
                l.holder_incarnation := p_incarnation;
                l.epoch := l.epoch + 1;
                l.version := l.version + 1;
                l.acquired_at := v_now;
                l.expires_at := v_now + v_ttl;
                o_acquired := true;
                v_mine := true;
            END IF;
        END IF;
        IF v_mine THEN
            UPDATE lease_agent.lease
               SET holder = l.holder, holder_incarnation = l.holder_incarnation, epoch = l.epoch,
                   version = l.version, acquired_at = l.acquired_at, expires_at = l.expires_at
             WHERE cluster = p_cluster;
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
    RETURN NEXT;
END;
$$;

-- The clean stop of an agent, after it stopped acting as master: releases the lease if
-- this incarnation holds it (holder null, expiry now, notify) and then marks the node
-- gone. Returns true when a lease was released. Idempotent.
CREATE OR REPLACE FUNCTION lease_agent.leave(p_cluster text, p_node text, p_incarnation text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_version  bigint;
BEGIN
    UPDATE lease_agent.lease
       SET holder = NULL, holder_incarnation = NULL, expires_at = v_now, version = version + 1
     WHERE cluster = p_cluster AND holder = p_node AND holder_incarnation = p_incarnation
    RETURNING version INTO v_version;
    IF FOUND THEN
        PERFORM pg_notify('lease_agent', v_version || ' free ' || p_cluster);
    END IF;
    UPDATE lease_agent.node SET expires_at = v_now
     WHERE cluster = p_cluster AND node = p_node AND incarnation = p_incarnation
       AND expires_at > v_now;
    RETURN v_version IS NOT NULL;
END;
$$;

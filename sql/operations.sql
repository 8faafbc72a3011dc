-- Operations: usage for billing and health over time, rolled up from the sync log and the
-- webhook table (see schema.sql), and the views and functions that read them.

CREATE AGGREGATE integ.latency_histogram(double precision) (
    SFUNC = integ.histogram_count, STYPE = bigint[], PARALLEL = SAFE
);
CREATE AGGREGATE integ.histogram_sum(bigint[]) (
    SFUNC = integ.histogram_add, STYPE = bigint[], PARALLEL = SAFE
);

-- One step of the roll-up (the first worker calls it every few seconds, in a transaction of its
-- own): sync-log and webhook rows past each watermark, and those of earlier gaps that became
-- visible, are added to integ.usage and integ.health_buckets; import calls likewise. Each source
-- is read in one statement (one snapshot), so a row is counted exactly once. Returns the rows
-- counted.
CREATE FUNCTION integ.roll_up(p_limit integer DEFAULT 50000)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w bigint;
    n bigint;
    total bigint := 0;
    prev timestamptz;
    touched bigint[];
    more bigint[];
    recount bigint[];
BEGIN
    -- sync log
    SELECT watermark INTO w FROM integ.rollup_state WHERE source = 'sync_log' FOR UPDATE;
    WITH r AS MATERIALIZED (
        SELECT l.id, l.at, l.tenant_id, l.marketplace, l.connection_id, l.operation, l.outcome, l.calls,
               l.latency_ms,
               CASE WHEN l.operation = 'reconcile'
                    THEN l.calls - least(l.calls, coalesce(integ.json_count(l.error, 'errors'), 0))
                    WHEN l.outcome IN ('success', 'mismatch') THEN l.calls ELSE 0 END AS ok,
               CASE WHEN l.operation = 'reconcile'
                    THEN least(l.calls, coalesce(integ.json_count(l.error, 'errors'), 0))
                    WHEN l.outcome IN ('retry', 'dead', 'failed') AND l.http_status IS DISTINCT FROM 429 THEN l.calls
                    ELSE 0 END AS bad,
               CASE WHEN l.outcome = 'throttled' OR l.http_status = 429 THEN l.calls ELSE 0 END AS throttled,
               l.operation IN ('push', 'price') AND l.outcome IN ('success', 'mismatch') AS pushed,
               l.operation IN ('webhook', 'order') AS delivery
          -- rows read where the index walk stops, never joined back: a generic plan expects a
          -- third of the log past the watermark and would merge-join all of it
          FROM ((SELECT x.id, x.at, x.tenant_id, x.marketplace, x.connection_id, x.operation, x.outcome, x.calls, x.latency_ms, x.error, x.http_status
                   FROM integ.sync_log x WHERE x.id > w ORDER BY x.id LIMIT p_limit)
                UNION ALL  -- rows of earlier gaps that became visible
                SELECT x.id, x.at, x.tenant_id, x.marketplace, x.connection_id, x.operation, x.outcome, x.calls, x.latency_ms, x.error, x.http_status
                  FROM integ.sync_log x
                 WHERE x.id IN (SELECT g.id FROM integ.rollup_gaps g WHERE g.source = 'sync_log' AND g.id <= w)) l),
    u AS (
        INSERT INTO integ.usage AS u (tenant_id, marketplace, hour, push_calls, read_calls, token_calls,
                                      order_fetch_calls, pushes, failures, throttled, orders_applied)
        SELECT r.tenant_id, r.marketplace, date_trunc('hour', r.at),
               coalesce(sum(r.calls) FILTER (WHERE r.operation IN ('push', 'price')), 0),
               coalesce(sum(r.calls) FILTER (WHERE r.operation IN ('reconcile', 'subscribe')), 0),
               coalesce(sum(r.calls) FILTER (WHERE r.operation = 'refresh'), 0),
               coalesce(sum(r.calls) FILTER (WHERE r.delivery), 0),
               count(*) FILTER (WHERE r.pushed),
               coalesce(sum(r.bad), 0),
               coalesce(sum(r.throttled), 0),
               count(*) FILTER (WHERE r.operation = 'order' AND r.outcome = 'success')
          FROM r GROUP BY 1, 2, 3
        ON CONFLICT (tenant_id, marketplace, hour) DO UPDATE
           SET push_calls = u.push_calls + EXCLUDED.push_calls, read_calls = u.read_calls + EXCLUDED.read_calls,
               token_calls = u.token_calls + EXCLUDED.token_calls,
               order_fetch_calls = u.order_fetch_calls + EXCLUDED.order_fetch_calls,
               pushes = u.pushes + EXCLUDED.pushes, failures = u.failures + EXCLUDED.failures,
               throttled = u.throttled + EXCLUDED.throttled, orders_applied = u.orders_applied + EXCLUDED.orders_applied
        RETURNING 1),
    h AS (
        INSERT INTO integ.health_buckets AS h (connection_id, tenant_id, marketplace, width_s, start, calls, successes,
                                               failures, throttled, pushes, dead, latency_ms, latency_max_ms,
                                               latency_ms_sum, webhooks_processed, webhook_ms_sum, webhook_ms)
        SELECT r.connection_id, min(r.tenant_id), min(r.marketplace), b.width_s,
               to_timestamp(coalesce(floor(extract(epoch FROM r.at) / nullif(b.width_s, 0)) * b.width_s, 0)),
               coalesce(sum(r.calls), 0), coalesce(sum(r.ok), 0), coalesce(sum(r.bad), 0),
               coalesce(sum(r.throttled), 0), count(*) FILTER (WHERE r.pushed),
               count(*) FILTER (WHERE r.outcome = 'dead' AND r.operation IN ('push', 'price')),
               integ.latency_histogram(r.latency_ms) FILTER (WHERE r.calls > 0 AND NOT r.delivery
                                                              AND r.operation <> 'reconcile'),
               max(r.latency_ms) FILTER (WHERE r.calls > 0 AND NOT r.delivery AND r.operation <> 'reconcile'),
               coalesce(sum(r.latency_ms) FILTER (WHERE r.calls > 0 AND NOT r.delivery AND r.operation <> 'reconcile'), 0),
               count(*) FILTER (WHERE r.delivery AND r.outcome = 'success'),
               coalesce(sum(r.latency_ms) FILTER (WHERE r.delivery AND r.outcome = 'success'), 0),
               integ.latency_histogram(r.latency_ms) FILTER (WHERE r.delivery AND r.outcome = 'success')
          FROM r JOIN (VALUES (0, NULL), (10, interval '15 minutes'), (60, interval '2 hours'), (3600, interval '2 days'))
                      AS b(width_s, kept) ON b.kept IS NULL OR r.at >= now() - b.kept  -- none the step below deletes
         WHERE r.connection_id IS NOT NULL
         GROUP BY r.connection_id, b.width_s, 5
        ON CONFLICT (connection_id, width_s, start) DO UPDATE
           SET calls = h.calls + EXCLUDED.calls, successes = h.successes + EXCLUDED.successes,
               failures = h.failures + EXCLUDED.failures, throttled = h.throttled + EXCLUDED.throttled,
               pushes = h.pushes + EXCLUDED.pushes, dead = h.dead + EXCLUDED.dead,
               latency_ms = integ.histogram_add(h.latency_ms, EXCLUDED.latency_ms),
               latency_max_ms = greatest(h.latency_max_ms, EXCLUDED.latency_max_ms),
               latency_ms_sum = h.latency_ms_sum + EXCLUDED.latency_ms_sum,
               webhooks_processed = h.webhooks_processed + EXCLUDED.webhooks_processed,
               webhook_ms_sum = h.webhook_ms_sum + EXCLUDED.webhook_ms_sum,
               webhook_ms = integ.histogram_add(h.webhook_ms, EXCLUDED.webhook_ms)
        RETURNING h.connection_id),
    gaps AS (
        INSERT INTO integ.rollup_gaps (source, id, noted_xmax)
        SELECT 'sync_log', g, pg_snapshot_xmax(pg_current_snapshot())
          FROM generate_series(w + 1, (SELECT max(id) FROM r)) g
         WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.id = g)
        ON CONFLICT DO NOTHING
        RETURNING 1),
    filled AS (
        DELETE FROM integ.rollup_gaps g USING r WHERE g.source = 'sync_log' AND g.id = r.id RETURNING 1),
    moved AS (
        UPDATE integ.rollup_state SET watermark = greatest(w, (SELECT max(id) FROM r)), rolled_at = now()
         WHERE source = 'sync_log' RETURNING 1)
    SELECT (SELECT count(*) FROM r), (SELECT array_agg(DISTINCT h.connection_id) FROM h) INTO n, touched;
    total := total + n;

    -- webhook deliveries received (each row is inserted once with its final status)
    SELECT watermark INTO w FROM integ.rollup_state WHERE source = 'webhooks' FOR UPDATE;
    WITH r AS MATERIALIZED (
        SELECT d.id, d.received_at, d.tenant_id, d.marketplace, d.connection_id, d.status
          FROM ((SELECT x.id, x.received_at, x.tenant_id, x.marketplace, x.connection_id, x.status FROM integ.webhooks x WHERE x.id > w ORDER BY x.id LIMIT p_limit)
                UNION ALL
                SELECT x.id, x.received_at, x.tenant_id, x.marketplace, x.connection_id, x.status FROM integ.webhooks x
                 WHERE x.id IN (SELECT g.id FROM integ.rollup_gaps g WHERE g.source = 'webhooks' AND g.id <= w)) d),
    u AS (
        INSERT INTO integ.usage AS u (tenant_id, marketplace, hour, webhooks_received, webhooks_accepted,
                                      webhooks_duplicate, webhooks_rejected)
        SELECT r.tenant_id, r.marketplace, date_trunc('hour', r.received_at), count(*),
               count(*) FILTER (WHERE r.status = 'accepted'), count(*) FILTER (WHERE r.status = 'duplicate'),
               count(*) FILTER (WHERE r.status = 'rejected')
          FROM r WHERE r.tenant_id IS NOT NULL GROUP BY 1, 2, 3
        ON CONFLICT (tenant_id, marketplace, hour) DO UPDATE
           SET webhooks_received = u.webhooks_received + EXCLUDED.webhooks_received,
               webhooks_accepted = u.webhooks_accepted + EXCLUDED.webhooks_accepted,
               webhooks_duplicate = u.webhooks_duplicate + EXCLUDED.webhooks_duplicate,
               webhooks_rejected = u.webhooks_rejected + EXCLUDED.webhooks_rejected
        RETURNING 1),
    h AS (
        INSERT INTO integ.health_buckets AS h (connection_id, tenant_id, marketplace, width_s, start, webhooks_received,
                                               webhooks_accepted, webhooks_duplicate, webhooks_rejected)
        SELECT r.connection_id, min(r.tenant_id), min(r.marketplace), b.width_s,
               to_timestamp(coalesce(floor(extract(epoch FROM r.received_at) / nullif(b.width_s, 0)) * b.width_s, 0)), count(*),
               count(*) FILTER (WHERE r.status = 'accepted'), count(*) FILTER (WHERE r.status = 'duplicate'),
               count(*) FILTER (WHERE r.status = 'rejected')
          FROM r JOIN (VALUES (0, NULL), (10, interval '15 minutes'), (60, interval '2 hours'), (3600, interval '2 days'))
                      AS b(width_s, kept) ON b.kept IS NULL OR r.received_at >= now() - b.kept
         WHERE r.connection_id IS NOT NULL AND r.tenant_id IS NOT NULL
         GROUP BY r.connection_id, b.width_s, 5
        ON CONFLICT (connection_id, width_s, start) DO UPDATE
           SET webhooks_received = h.webhooks_received + EXCLUDED.webhooks_received,
               webhooks_accepted = h.webhooks_accepted + EXCLUDED.webhooks_accepted,
               webhooks_duplicate = h.webhooks_duplicate + EXCLUDED.webhooks_duplicate,
               webhooks_rejected = h.webhooks_rejected + EXCLUDED.webhooks_rejected
        RETURNING h.connection_id),
    gaps AS (
        INSERT INTO integ.rollup_gaps (source, id, noted_xmax)
        SELECT 'webhooks', g, pg_snapshot_xmax(pg_current_snapshot())
          FROM generate_series(w + 1, (SELECT max(id) FROM r)) g
         WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.id = g)
        ON CONFLICT DO NOTHING
        RETURNING 1),
    filled AS (
        DELETE FROM integ.rollup_gaps g USING r WHERE g.source = 'webhooks' AND g.id = r.id RETURNING 1),
    moved AS (
        UPDATE integ.rollup_state SET watermark = greatest(w, (SELECT max(id) FROM r)), rolled_at = now()
         WHERE source = 'webhooks' RETURNING 1)
    SELECT (SELECT count(*) FROM r), (SELECT array_agg(DISTINCT h.connection_id) FROM h) INTO n, more;
    total := total + n;

    -- import calls: each import's calls since the last step, counted in this hour
    WITH d AS (
        SELECT i.id, i.tenant_id, i.marketplace, i.api_calls - i.calls_rolled AS calls
          FROM integ.catalog_imports i WHERE i.api_calls > i.calls_rolled FOR UPDATE SKIP LOCKED),
    marked AS (
        UPDATE integ.catalog_imports i SET calls_rolled = i.calls_rolled + d.calls FROM d WHERE i.id = d.id RETURNING 1)
    INSERT INTO integ.usage AS u (tenant_id, marketplace, hour, import_calls)
    SELECT d.tenant_id, d.marketplace, date_trunc('hour', now()), sum(d.calls) FROM d GROUP BY 1, 2
    ON CONFLICT (tenant_id, marketplace, hour) DO UPDATE SET import_calls = u.import_calls + EXCLUDED.import_calls;

    -- a gap no transaction can fill any more: every one running when it was noted has ended
    DELETE FROM integ.rollup_gaps
     WHERE noted_at < now() - interval '1 minute' AND noted_xmax < pg_snapshot_xmin(pg_current_snapshot());
    DELETE FROM integ.health_buckets
     WHERE (width_s = 10 AND start < now() - interval '15 minutes')
        OR (width_s = 60 AND start < now() - interval '2 hours') OR (width_s = 3600 AND start < now() - interval '2 days');

    -- integ.health's windows, kept up to date where they changed: buckets that left a window
    -- since the last time come off it; connections counted now, and windows whose largest
    -- latency left (a maximum cannot be taken back), are recomputed from their buckets (all of
    -- them the first time, and after a backlog, which is counted in full batches)
    SELECT rolled_at INTO prev FROM integ.rollup_state WHERE source = 'health_windows' FOR UPDATE;
    IF total >= p_limit THEN
        UPDATE integ.rollup_state SET rolled_at = NULL WHERE source = 'health_windows';
        RETURN total;
    END IF;
    UPDATE integ.rollup_state SET rolled_at = now() WHERE source = 'health_windows';
    IF prev IS NULL OR prev < now() - interval '1 hour' THEN
        -- (after an hour away, buckets that left a window may have been deleted already)
        SELECT array_agg(DISTINCT b.connection_id) INTO recount FROM integ.health_buckets b;
    ELSE
        recount := coalesce(touched, '{}') || coalesce(more, '{}');
        -- each window's leaving buckets by index range (usually none: a minute boundary passed)
        WITH leaving AS (
            SELECT '5m'::text AS name, b.* FROM integ.health_buckets b
             WHERE b.width_s = 60 AND b.start < date_trunc('minute', now() - interval '5 minutes')
               AND b.start >= date_trunc('minute', prev - interval '5 minutes')
            UNION ALL
            SELECT '1h', b.* FROM integ.health_buckets b
             WHERE b.width_s = 60 AND b.start < date_trunc('minute', now() - interval '1 hour')
               AND b.start >= date_trunc('minute', prev - interval '1 hour')
            UNION ALL
            SELECT '1d', b.* FROM integ.health_buckets b
             WHERE b.width_s = 3600 AND b.start < date_trunc('hour', now() - interval '1 day')
               AND b.start >= date_trunc('hour', prev - interval '1 day')),
        gone AS (
            SELECT l.connection_id, l.name, sum(l.calls) AS calls, sum(l.successes) AS successes,
                   sum(l.failures) AS failures, sum(l.throttled) AS throttled, sum(l.pushes) AS pushes,
                   sum(l.dead) AS dead, integ.histogram_sum(l.latency_ms) AS latency_ms,
                   max(l.latency_max_ms) AS latency_max_ms, sum(l.webhooks_received) AS webhooks_received,
                   sum(l.webhooks_processed) AS webhooks_processed, sum(l.webhook_ms_sum) AS webhook_ms_sum,
                   integ.histogram_sum(l.webhook_ms) AS webhook_ms
              FROM leaving l WHERE l.connection_id <> ALL (recount) GROUP BY 1, 2),
        taken AS (
            UPDATE integ.health_windows hw
               SET calls = hw.calls - g.calls, successes = hw.successes - g.successes,
                   failures = hw.failures - g.failures, throttled = hw.throttled - g.throttled,
                   pushes = hw.pushes - g.pushes, dead = hw.dead - g.dead,
                   latency_ms = CASE WHEN g.latency_ms IS NULL THEN hw.latency_ms ELSE
                       ARRAY(SELECT coalesce(u.a, 0) - coalesce(u.b, 0)
                               FROM unnest(hw.latency_ms, g.latency_ms) WITH ORDINALITY u(a, b, i) ORDER BY u.i) END,
                   webhooks_received = hw.webhooks_received - g.webhooks_received,
                   webhooks_processed = hw.webhooks_processed - g.webhooks_processed,
                   webhook_ms_sum = hw.webhook_ms_sum - g.webhook_ms_sum,
                   webhook_ms = CASE WHEN g.webhook_ms IS NULL THEN hw.webhook_ms ELSE
                       ARRAY(SELECT coalesce(u.a, 0) - coalesce(u.b, 0)
                               FROM unnest(hw.webhook_ms, g.webhook_ms) WITH ORDINALITY u(a, b, i) ORDER BY u.i) END
              FROM gone g
             WHERE hw.connection_id = g.connection_id AND hw."window" = g.name
               AND (g.latency_max_ms IS NULL OR g.latency_max_ms < hw.latency_max_ms)
            RETURNING 1)
        SELECT recount || coalesce(array_agg(DISTINCT g.connection_id), '{}') INTO recount
          FROM gone g JOIN integ.health_windows hw ON hw.connection_id = g.connection_id AND hw."window" = g.name
         WHERE g.latency_max_ms >= hw.latency_max_ms OR (g.latency_max_ms IS NOT NULL AND hw.latency_max_ms IS NULL);
        recount := ARRAY(SELECT DISTINCT unnest(recount));
        IF cardinality(recount) = 0 THEN
            recount := NULL;
        END IF;
    END IF;
    IF recount IS NOT NULL THEN
        DELETE FROM integ.health_windows hw WHERE hw.connection_id = ANY (recount);
        INSERT INTO integ.health_windows
        SELECT h.connection_id, min(h.tenant_id), min(h.marketplace), h.name, sum(h.calls), sum(h.successes),
               sum(h.failures), sum(h.throttled), sum(h.pushes), sum(h.dead), integ.histogram_sum(h.latency_ms),
               max(h.latency_max_ms), sum(h.webhooks_received), sum(h.webhooks_processed), sum(h.webhook_ms_sum),
               integ.histogram_sum(h.webhook_ms)
          FROM (SELECT '5m'::text AS name, b.* FROM integ.health_buckets b
                 WHERE b.connection_id = ANY (recount) AND b.width_s = 60
                   AND b.start >= date_trunc('minute', now() - interval '5 minutes')
                UNION ALL
                SELECT '1h', b.* FROM integ.health_buckets b
                 WHERE b.connection_id = ANY (recount) AND b.width_s = 60
                   AND b.start >= date_trunc('minute', now() - interval '1 hour')
                UNION ALL
                SELECT '1d', b.* FROM integ.health_buckets b
                 WHERE b.connection_id = ANY (recount) AND b.width_s = 3600
                   AND b.start >= date_trunc('hour', now() - interval '1 day')) h
         GROUP BY h.connection_id, h.name;
    END IF;
    RETURN total;
END
$$;

-- Deletes sync-log rows older than `p_keep` that the roll-up has counted (at most p_limit);
-- returns how many.
CREATE FUNCTION integ.prune_sync_log(p_keep interval, p_limit integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    -- the oldest p_limit rows by id (ids follow time closely): never a scan of the whole log
    -- to find that nothing is old enough
    WITH gone AS (
        DELETE FROM integ.sync_log l
         WHERE l.id IN (SELECT x.id FROM (SELECT y.id, y.at FROM integ.sync_log y
                                           WHERE y.id <= (SELECT watermark FROM integ.rollup_state WHERE source = 'sync_log')
                                           ORDER BY y.id LIMIT p_limit) x
                         WHERE x.at < now() - p_keep)
           AND NOT EXISTS (SELECT 1 FROM integ.rollup_gaps g WHERE g.source = 'sync_log' AND g.id = l.id)
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
-- The alert rules' verdicts (the first worker's, one per connection and rule whose condition
-- holds or whose alert is open): a condition that holds raises its alert once per episode (a
-- row and NOTIFY integ_alerts); one clear for `p_clear_after` resolves it (resolved_at and a
-- second NOTIFY saying so); one that holds again before that keeps the episode open.
CREATE FUNCTION integ.apply_alert_verdicts(p_connection bigint[], p_tenant text[], p_marketplace text[], p_kind text[],
                                           p_holds boolean[], p_message text[], p_clear_after interval)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
BEGIN
    FOR a IN
        INSERT INTO integ.alerts (tenant_id, marketplace, connection_id, kind, message)
        SELECT v.tenant_id, v.marketplace, v.connection_id, v.kind, v.message
          FROM unnest(p_connection, p_tenant, p_marketplace, p_kind, p_holds, p_message)
               AS v(connection_id, tenant_id, marketplace, kind, holds, message)
         WHERE v.holds AND NOT EXISTS (SELECT 1 FROM integ.alerts o WHERE o.connection_id = v.connection_id
                                          AND o.kind = v.kind AND o.resolved_at IS NULL)
        RETURNING *
    LOOP
        PERFORM pg_notify('integ_alerts', left(json_build_object('id', a.id, 'tenant_id', a.tenant_id,
            'marketplace', a.marketplace, 'connection_id', a.connection_id, 'kind', a.kind, 'message', a.message)::text, 7900));
    END LOOP;
    UPDATE integ.alerts o SET clear_since = CASE WHEN v.holds THEN NULL ELSE coalesce(o.clear_since, now()) END
      FROM unnest(p_connection, p_kind, p_holds) AS v(connection_id, kind, holds)
     WHERE o.connection_id = v.connection_id AND o.kind = v.kind AND o.resolved_at IS NULL;
    FOR a IN
        UPDATE integ.alerts o SET resolved_at = now()
          FROM unnest(p_connection, p_kind, p_holds) AS v(connection_id, kind, holds)
         WHERE o.connection_id = v.connection_id AND o.kind = v.kind AND o.resolved_at IS NULL AND NOT v.holds
           AND o.clear_since <= now() - p_clear_after
        RETURNING o.*
    LOOP
        PERFORM pg_notify('integ_alerts', json_build_object('id', a.id, 'tenant_id', a.tenant_id,
            'marketplace', a.marketplace, 'connection_id', a.connection_id, 'kind', a.kind, 'resolved', true,
            'resolved_at', a.resolved_at)::text);
    END LOOP;
END
$$;
-- One row per connection: with thousands, the planner's costs pass jit_above_cost, and compiling
-- the plan took longer than running it.
ALTER FUNCTION integ.metrics() SET jit = off;

REVOKE ALL ON FUNCTION integ.roll_up(integer), integ.prune_sync_log(interval, integer),
    integ.apply_alert_verdicts(bigint[], text[], text[], text[], boolean[], text[], interval) FROM PUBLIC;

-- Per connection and window (5m, 1h, 1d): calls and their outcomes, API latency, pushes,
-- webhooks and their processing time (receipt to applied), dead jobs, and the backlog with the
-- time it needs at the last 5 minutes' rate. Reads the windows the roll-up keeps, never the
-- sync log.
CREATE VIEW integ.health AS
WITH w(name) AS (VALUES ('5m'), ('1h'), ('1d')),
b AS NOT MATERIALIZED (  -- kept by the roll-up; inlined: the backlog's rate reads only the 5m rows
    SELECT hw."window" AS name, hw.connection_id, hw.calls, hw.successes, hw.failures, hw.throttled, hw.pushes,
           hw.dead, hw.latency_ms AS latency, hw.latency_max_ms AS latency_max, hw.webhooks_received,
           hw.webhooks_processed, hw.webhook_ms_sum, hw.webhook_ms
      FROM integ.health_windows hw),
q AS (
    SELECT j.connection_id, count(*) AS backlog, min(j.created_at) AS oldest
      FROM integ.sync_jobs j
     WHERE j.state = 'pending' AND j.next_attempt_at < 'infinity'  -- held jobs are no backlog
     GROUP BY j.connection_id)
SELECT c.id AS connection_id, c.tenant_id, c.marketplace, w.name AS "window",
       coalesce(b.calls, 0) AS calls, coalesce(b.successes, 0) AS successes, coalesce(b.failures, 0) AS failures,
       coalesce(b.throttled, 0) AS throttled,
       round(100.0 * b.successes / nullif(b.successes + b.failures, 0), 2) AS success_rate,
       integ.histogram_quantile(b.latency, 0.5, b.latency_max) AS latency_p50_ms,
       integ.histogram_quantile(b.latency, 0.95, b.latency_max) AS latency_p95_ms,
       b.latency_max AS latency_max_ms,
       coalesce(b.pushes, 0) AS pushes,
       coalesce(b.webhooks_received, 0) AS webhooks_received, coalesce(b.webhooks_processed, 0) AS webhooks_processed,
       round((b.webhook_ms_sum / nullif(b.webhooks_processed, 0))::numeric, 1) AS webhook_ms_mean,
       integ.histogram_quantile(b.webhook_ms, 0.95, NULL) AS webhook_ms_p95,
       coalesce(b.dead, 0) AS dead_jobs,
       coalesce(q.backlog, 0) AS backlog,
       now() - q.oldest AS oldest_pending_age,
       CASE WHEN q.backlog > 0 AND r.pushes > 0
            THEN make_interval(secs => q.backlog * 300.0 / r.pushes) END AS backlog_eta
  FROM integ.connections c
 CROSS JOIN w
  LEFT JOIN b ON b.connection_id = c.id AND b.name = w.name
  LEFT JOIN b r ON r.connection_id = c.id AND r.name = '5m'
  LEFT JOIN q ON q.connection_id = c.id
 WHERE integ.tenant_visible(c.tenant_id);

-- Usage of a tenant summed per marketplace over the hours that start in [from, to).
CREATE FUNCTION integ.usage_report(tenant_id text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (marketplace text, api_calls bigint, push_calls bigint, read_calls bigint, import_calls bigint,
               token_calls bigint, order_fetch_calls bigint, pushes bigint, failures bigint, throttled bigint,
               webhooks_received bigint, webhooks_accepted bigint, orders_applied bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN
        RAISE EXCEPTION 'integ.usage_report: tenant_id, from and to are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM integ.require_tenant($1);
    IF NOT EXISTS (SELECT 1 FROM integ.connections c WHERE c.tenant_id = $1)
       AND NOT EXISTS (SELECT 1 FROM integ.usage u WHERE u.tenant_id = $1) THEN
        RAISE EXCEPTION 'unknown tenant "%": it has no connection and no usage', left($1, 80) USING ERRCODE = 'no_data_found';
    END IF;
    IF $2 > $3 THEN
        RAISE EXCEPTION 'integ.usage_report: from (%) is after to (%)', $2, $3 USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT u.marketplace,
           sum(u.push_calls + u.read_calls + u.import_calls + u.token_calls + u.order_fetch_calls)::bigint,
           sum(u.push_calls)::bigint, sum(u.read_calls)::bigint, sum(u.import_calls)::bigint,
           sum(u.token_calls)::bigint, sum(u.order_fetch_calls)::bigint, sum(u.pushes)::bigint,
           sum(u.failures)::bigint, sum(u.throttled)::bigint, sum(u.webhooks_received)::bigint,
           sum(u.webhooks_accepted)::bigint, sum(u.orders_applied)::bigint
      FROM integ.usage u
     WHERE u.tenant_id = $1 AND u.hour >= $2 AND u.hour < $3
     GROUP BY u.marketplace ORDER BY u.marketplace;
END
$$;

-- ---- Holding and reverting ---------------------------------------------------------------------

-- The listings integ.hold, integ.release and integ.revert act on: the tenant's, narrowed by a
-- marketplace and a product when given. Raises on NULL or unknown arguments.
CREATE FUNCTION integ.scoped_listings(p_tenant text, p_marketplace text, p_product text)
RETURNS SETOF bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_tenant IS NULL THEN
        RAISE EXCEPTION 'tenant_id is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM integ.require_tenant(p_tenant);
    IF p_marketplace IS NOT NULL AND p_marketplace NOT IN ('mercadolibre', 'shopify', 'tiktok', 'shein') THEN
        RAISE EXCEPTION 'unknown marketplace "%" (expected one of: mercadolibre, shopify, tiktok, shein)', left(p_marketplace, 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM integ.connections c WHERE c.tenant_id = p_tenant
                      AND (p_marketplace IS NULL OR c.marketplace = p_marketplace)) THEN
        RAISE EXCEPTION 'tenant "%" has no % connection', left(p_tenant, 80), coalesce(p_marketplace, 'marketplace')
            USING ERRCODE = 'no_data_found';
    END IF;
    IF p_product IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM integ.listings l WHERE l.tenant_id = p_tenant AND l.product_id = p_product
           AND (p_marketplace IS NULL OR l.marketplace = p_marketplace)) THEN
        RAISE EXCEPTION 'product "%" of tenant "%" is not mapped to any listing%', left(p_product, 80), left(p_tenant, 80),
            coalesce(' on ' || p_marketplace, '') USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT l.id FROM integ.listings l
                  WHERE l.tenant_id = p_tenant AND (p_marketplace IS NULL OR l.marketplace = p_marketplace)
                    AND (p_product IS NULL OR l.product_id = p_product);
END
$$;

-- Stops pushes to the matching listings (EGDC's changes are still recorded); returns how many
-- are held.
CREATE FUNCTION integ.hold(tenant_id text, marketplace text DEFAULT NULL, product_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM 1 FROM integ.scoped_listings($1, $2, $3) LIMIT 1;  -- its checks, whatever the plan below
    UPDATE integ.listings l SET held_since = coalesce(l.held_since, now())
     WHERE l.id IN (SELECT integ.scoped_listings($1, $2, $3));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Lets the matching held listings be pushed again: each gets EGDC's newest value once (values
-- of a revert are forgotten). Returns how many were released.
CREATE FUNCTION integ.release(tenant_id text, marketplace text DEFAULT NULL, product_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM 1 FROM integ.scoped_listings($1, $2, $3) LIMIT 1;  -- its checks, whatever the plan below
    WITH r AS (
        UPDATE integ.listings l SET held_since = NULL, revert_stock = NULL, revert_price = NULL
         WHERE l.id IN (SELECT integ.scoped_listings($1, $2, $3)) AND l.held_since IS NOT NULL
        RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace),
    j AS (
        INSERT INTO integ.sync_jobs AS s (listing_id, connection_id, tenant_id, marketplace)
        SELECT r.id, r.connection_id, r.tenant_id, r.marketplace FROM r
        ON CONFLICT (listing_id) WHERE state = 'pending' DO UPDATE SET next_attempt_at = now(), price_only = false
        RETURNING 1)
    SELECT count(*) INTO n FROM r;
    IF n > 0 THEN
        PERFORM integ.wake_workers_at_commit();
    END IF;
    RETURN n;
END
$$;

-- For every listing of the tenant (and marketplace) we changed since `since`, the stock and
-- price it held before our first change after `since` (the last values we wrote before it, from
-- the sync log): a dry run answers what would be done; otherwise those values are pushed and the
-- listings held until integ.release. Answers per marketplace.
CREATE FUNCTION integ.revert(tenant_id text, since timestamptz, marketplace text DEFAULT NULL,
                             dry_run boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
BEGIN
    IF $2 IS NULL OR $4 IS NULL THEN
        RAISE EXCEPTION 'since and dry_run are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF $2 > now() THEN
        RAISE EXCEPTION 'since (%) is in the future', $2 USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM integ.scoped_listings($1, $3, NULL) LIMIT 1;  -- its checks
    CREATE TEMP TABLE IF NOT EXISTS integ_revert (
        listing_id bigint, marketplace text, product_id text, external_id text, stock_now integer,
        stock_before integer, stock_changed boolean, price_now numeric, price_before numeric,
        price_changed boolean) ON COMMIT DROP;
    TRUNCATE integ_revert;
    INSERT INTO integ_revert
    SELECT l.id, l.marketplace, l.product_id, l.external_id, l.last_pushed_stock,
           (SELECT x.stock FROM integ.sync_log x
             WHERE x.listing_id = l.id AND x.at < $2 AND x.operation IN ('push', 'price')
               AND x.outcome IN ('success', 'mismatch') AND x.stock IS NOT NULL
             ORDER BY x.id DESC LIMIT 1),
           c.stock_changed,
           l.last_pushed_price,
           (SELECT x.price FROM integ.sync_log x
             WHERE x.listing_id = l.id AND x.at < $2 AND x.operation = 'price'
               AND x.outcome IN ('success', 'mismatch') AND x.price IS NOT NULL
             ORDER BY x.id DESC LIMIT 1),
           c.price_changed
      FROM (SELECT x.listing_id, bool_or(x.stock IS NOT NULL) AS stock_changed, bool_or(x.price IS NOT NULL) AS price_changed
              FROM integ.sync_log x
             WHERE x.tenant_id = $1 AND x.at >= $2 AND x.operation IN ('push', 'price')
               AND x.outcome IN ('success', 'mismatch') AND x.listing_id IS NOT NULL
             GROUP BY x.listing_id) c
      JOIN integ.listings l ON l.id = c.listing_id
     WHERE l.id IN (SELECT integ.scoped_listings($1, $3, NULL));
    -- what is put back: a value we changed that differs from the one before
    UPDATE integ_revert SET stock_before = NULL WHERE NOT stock_changed OR stock_before IS NOT DISTINCT FROM stock_now;
    UPDATE integ_revert SET price_before = NULL WHERE NOT price_changed OR price_before IS NOT DISTINCT FROM price_now;
    IF NOT $4 THEN
        UPDATE integ.listings l
           SET held_since = coalesce(l.held_since, now()), revert_stock = r.stock_before, revert_price = r.price_before
          FROM integ_revert r
         WHERE l.id = r.listing_id AND (r.stock_before IS NOT NULL OR r.price_before IS NOT NULL);
        INSERT INTO integ.sync_jobs AS s (listing_id, connection_id, tenant_id, marketplace)
        SELECT l.id, l.connection_id, l.tenant_id, l.marketplace
          FROM integ_revert r JOIN integ.listings l ON l.id = r.listing_id
         WHERE r.stock_before IS NOT NULL OR r.price_before IS NOT NULL
        ON CONFLICT (listing_id) WHERE state = 'pending' DO UPDATE SET next_attempt_at = now(), price_only = false;
        PERFORM integ.wake_workers_at_commit();
    END IF;
    SELECT jsonb_build_object('dry_run', $4, 'since', $2, 'marketplaces', coalesce(jsonb_object_agg(m.marketplace, m.what), '{}'))
      INTO answer
      FROM (SELECT r.marketplace,
                   jsonb_build_object(
                       'listings_changed', count(*),
                       'stock_reverts', count(r.stock_before),
                       'price_reverts', count(r.price_before),
                       CASE WHEN $4 THEN 'would_hold' ELSE 'held' END,
                           count(*) FILTER (WHERE r.stock_before IS NOT NULL OR r.price_before IS NOT NULL),
                       'unknown', count(*) FILTER (WHERE (r.stock_changed AND r.stock_before IS NULL AND NOT EXISTS (
                                      SELECT 1 FROM integ.sync_log x WHERE x.listing_id = r.listing_id AND x.at < $2
                                         AND x.stock IS NOT NULL))),
                       'samples', (SELECT jsonb_agg(jsonb_build_object('product_id', s.product_id, 'external_id', s.external_id,
                                                                       'stock', jsonb_build_array(s.stock_now, s.stock_before),
                                                                       'price', jsonb_build_array(s.price_now, s.price_before)))
                                     FROM (SELECT * FROM integ_revert s WHERE s.marketplace = r.marketplace
                                              AND (s.stock_before IS NOT NULL OR s.price_before IS NOT NULL)
                                            ORDER BY s.product_id LIMIT 5) s)) AS what
              FROM integ_revert r GROUP BY r.marketplace) m;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION integ.scoped_listings(text, text, text) FROM PUBLIC;

-- Row-level security and grants: at the end of api.sql, after the roles exist.

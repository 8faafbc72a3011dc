-- integration: the relational part of the SQL API (PL/pgSQL). Loaded after the Rust functions.

-- Installs the triggers that turn every committed stock change of an EGDC inventory table into
-- outbox work, and enqueues the current stock of already-mapped products.
CREATE FUNCTION integ.track_inventory(inventory regclass, tenant_column name, product_column name, stock_column name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col name;
    stock_type regtype;
BEGIN
    PERFORM integ.require_tenant(NULL);
    IF inventory IS NULL OR tenant_column IS NULL OR product_column IS NULL OR stock_column IS NULL THEN
        RAISE EXCEPTION 'integ.track_inventory: no argument may be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = inventory AND relkind IN ('r', 'p')) THEN
        RAISE EXCEPTION 'integ.track_inventory: % is not a table', inventory USING ERRCODE = 'wrong_object_type';
    END IF;
    IF tenant_column = product_column OR tenant_column = stock_column OR product_column = stock_column THEN
        RAISE EXCEPTION 'integ.track_inventory: tenant, product and stock must be three different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY ARRAY[tenant_column, product_column, stock_column] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = inventory AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'integ.track_inventory: table % has no column "%"', inventory, col
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    SELECT atttypid::regtype INTO stock_type FROM pg_attribute
     WHERE attrelid = inventory AND attname = stock_column AND attnum > 0 AND NOT attisdropped;
    IF stock_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype,
                          'real'::regtype, 'double precision'::regtype) THEN
        RAISE EXCEPTION 'integ.track_inventory: stock column "%" is %, expected a numeric type', stock_column, stock_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_stock ON %s', inventory);
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_stock_update ON %s', inventory);
    EXECUTE format('CREATE TRIGGER integ_track_stock AFTER INSERT OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION integ.track_stock(%L, %L, %L)',
                   inventory, tenant_column, product_column, stock_column);
    -- UPDATE OF keeps statements that set none of the three columns from calling the trigger;
    -- the trigger itself skips rows whose three values did not change. (A WHEN clause would do
    -- that too, but it is compiled again for every statement: ~5% of a one-row UPDATE.)
    EXECUTE format('CREATE TRIGGER integ_track_stock_update AFTER UPDATE OF %1$I, %2$I, %3$I ON %4$s
                    FOR EACH ROW EXECUTE FUNCTION integ.track_stock(%1$L, %2$L, %3$L)',
                   tenant_column, product_column, stock_column, inventory);

    INSERT INTO integ.tracked_tables (relid, table_name, tenant_column, product_column, stock_column)
    VALUES (inventory, inventory::text, tenant_column, product_column, stock_column)
    ON CONFLICT (relid) DO UPDATE
       SET table_name = EXCLUDED.table_name, tenant_column = EXCLUDED.tenant_column,
           product_column = EXCLUDED.product_column, stock_column = EXCLUDED.stock_column;

    -- Bring already-mapped listings to the table's current stock.
    EXECUTE format('SELECT count(integ.enqueue_stock(t.%1$I::text, t.%2$I::text, t.%3$I::numeric)) FROM %4$s t
                     WHERE EXISTS (SELECT 1 FROM integ.listings l
                                    WHERE l.tenant_id = t.%1$I::text AND l.product_id = t.%2$I::text)',
                   tenant_column, product_column, stock_column, inventory);
END
$$;

CREATE FUNCTION integ.untrack_inventory(inventory regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integ.require_tenant(NULL);
    IF NOT EXISTS (SELECT 1 FROM integ.tracked_tables WHERE relid = inventory) THEN
        RAISE EXCEPTION 'integ.untrack_inventory: % is not tracked', inventory USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_stock ON %s', inventory);
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_stock_update ON %s', inventory);
    DELETE FROM integ.tracked_tables WHERE relid = inventory;
END
$$;

-- EGDC's current stock of one product, from the first tracked table that has it; enqueues it.
-- EGDC's stock of a product as the first tracked table that has it holds it now (NULL: none).
CREATE FUNCTION integ.tracked_stock(p_tenant text, p_product text)
RETURNS numeric
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    v numeric;
    n bigint;
BEGIN
    FOR t IN SELECT tt.* FROM integ.tracked_tables tt JOIN pg_class c ON c.oid = tt.relid ORDER BY tt.created_at LOOP
        EXECUTE format('SELECT %I::numeric FROM %s WHERE %I::text = $1 AND %I::text = $2 LIMIT 1',
                       t.stock_column, t.relid::regclass, t.tenant_column, t.product_column)
           INTO v USING p_tenant, p_product;
        GET DIAGNOSTICS n = ROW_COUNT;  -- EXECUTE does not set FOUND
        IF n > 0 THEN
            RETURN coalesce(v, 0);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION integ.seed_listing_stock(p_tenant text, p_product text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v numeric := integ.tracked_stock(p_tenant, p_product);
BEGIN
    IF v IS NULL THEN
        RETURN false;
    END IF;
    PERFORM integ.enqueue_stock(p_tenant, p_product, v);
    RETURN true;
END
$$;

-- Changes EGDC's stock of one product by `delta` in the first tracked table that has it (an
-- order line taken or given back). The table's own trigger then sends the new stock to every
-- channel. Returns false when no tracked table has the product.
CREATE FUNCTION integ.adjust_stock(p_tenant text, p_product text, p_delta numeric)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    FOR t IN SELECT tt.* FROM integ.tracked_tables tt JOIN pg_class c ON c.oid = tt.relid ORDER BY tt.created_at LOOP
        BEGIN
            EXECUTE format('UPDATE %s SET %I = %I + $3 WHERE %I::text = $1 AND %I::text = $2',
                           t.relid::regclass, t.stock_column, t.stock_column, t.tenant_column, t.product_column)
              USING p_tenant, p_product, p_delta;
        EXCEPTION WHEN numeric_value_out_of_range THEN
            -- never wrapped or clamped: the order is refused whole (src/inbound/orders.rs)
            RAISE EXCEPTION 'changing the stock of % by % would leave the range of %.%',
                            left(p_product, 80), p_delta, t.relid::regclass, quote_ident(t.stock_column)
                  USING ERRCODE = 'numeric_value_out_of_range';
        END;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
REVOKE EXECUTE ON FUNCTION integ.adjust_stock(text, text, numeric) FROM PUBLIC;

-- Puts dead jobs back in the queue (one per listing; a listing that already has a pending job
-- needs none). Returns how many listings will be retried.
CREATE FUNCTION integ.retry_dead(tenant_id text DEFAULT NULL, marketplace text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n bigint;
BEGIN
    PERFORM integ.require_tenant($1);
    IF $2 IS NOT NULL AND $2 NOT IN ('mercadolibre', 'shopify', 'tiktok', 'shein') THEN
        RAISE EXCEPTION 'unknown marketplace "%" (expected one of: mercadolibre, shopify, tiktok, shein)', left($2, 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM integ.connections c WHERE c.tenant_id = $1) THEN
        RAISE EXCEPTION 'unknown tenant "%": it has no connection', left($1, 80) USING ERRCODE = 'no_data_found';
    END IF;
    WITH dead AS (
        SELECT j.id, j.listing_id,
               row_number() OVER (PARTITION BY j.listing_id ORDER BY j.id DESC) AS rn
          FROM integ.sync_jobs j
         WHERE j.state = 'dead' AND ($1 IS NULL OR j.tenant_id = $1) AND ($2 IS NULL OR j.marketplace = $2)
    ), revived AS (
        UPDATE integ.sync_jobs s
           SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now()
          FROM dead d
         WHERE s.id = d.id AND d.rn = 1
           AND NOT EXISTS (SELECT 1 FROM integ.sync_jobs p WHERE p.listing_id = d.listing_id AND p.state = 'pending')
        RETURNING s.id
    ), retired AS (
        UPDATE integ.sync_jobs s
           SET state = 'done', last_error = 'superseded by integ.retry_dead', updated_at = now()
          FROM dead d
         WHERE s.id = d.id AND s.id NOT IN (SELECT id FROM revived)
        RETURNING s.id
    )
    SELECT count(DISTINCT d.listing_id) INTO n FROM dead d;
    IF n > 0 THEN
        PERFORM integ.wake_workers_at_commit();
    END IF;
    RETURN n;
END
$$;

-- Per connection: queue depth, oldest pending age, dead count, last success, last error.
CREATE VIEW integ.status AS
SELECT c.id AS connection_id,
       c.tenant_id,
       c.marketplace,
       c.status,
       coalesce(q.pending, 0) AS pending,
       coalesce(q.in_flight, 0) AS in_flight,
       coalesce(q.pending, 0) + coalesce(q.in_flight, 0) AS queue_depth,
       now() - q.oldest_pending AS oldest_pending_age,
       coalesce(q.dead, 0) AS dead,
       c.last_success_at AS last_success,
       c.last_error,
       c.last_error_at,
       CASE WHEN c.status = 'paused' THEN 'open (paused)' ELSE coalesce(ls.circuit, 'closed') END AS circuit,
       coalesce(ls.consecutive_failures, 0) AS consecutive_failures
FROM integ.connections c
LEFT JOIN integ.limiter_state() ls ON ls.connection_id = c.id
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'pending') AS pending,
           count(*) FILTER (WHERE j.state = 'in_flight') AS in_flight,
           count(*) FILTER (WHERE j.state = 'dead') AS dead,
           min(j.created_at) FILTER (WHERE j.state = 'pending') AS oldest_pending
    FROM integ.sync_jobs j
    WHERE j.connection_id = c.id AND j.state <> 'done'
) q ON true
WHERE integ.tenant_visible(c.tenant_id);


-- Each connection's request budget (shared by every worker and backend), for operations and
-- per-tenant billing. Rows appear once a connection has sent; counters restart with the server.
CREATE VIEW integ.rate_limits AS
SELECT c.id AS connection_id, c.tenant_id, c.marketplace,
       ls.requests_per_second, ls.effective_per_second, ls.burst, ls.available, ls.next_allowed_in_ms, ls.paused_for_ms,
       ls.requests, ls.throttled, ls.remote_throttled, ls.circuit, ls.consecutive_failures
FROM integ.connections c
JOIN integ.limiter_state() ls ON ls.connection_id = c.id
WHERE integ.tenant_visible(c.tenant_id);

-- Credentials, metadata only (the secrets stay encrypted in integ.credential_store, which no
-- role but the extension's owner reads).
CREATE VIEW integ.credentials AS
SELECT k.connection_id, k.tenant_id, k.marketplace, k.identifiers, k.key_version, k.generation,
       k.access_expires_at, k.refreshed_at, k.updated_at
FROM integ.credential_store k
WHERE integ.tenant_visible(k.tenant_id);

-- The operator holds a connection: its jobs wait (nothing is lost) until integ.resume.
CREATE FUNCTION integ.pause(tenant_id text, marketplace text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM integ.require_tenant($1);
    UPDATE integ.connections c SET status = 'paused', updated_at = now()
     WHERE c.tenant_id = $1 AND c.marketplace = $2;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no % connection', left($1, 80), left($2, 64) USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

CREATE FUNCTION integ.resume(tenant_id text, marketplace text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s text;
BEGIN
    PERFORM integ.require_tenant($1);
    SELECT c.status INTO s FROM integ.connections c WHERE c.tenant_id = $1 AND c.marketplace = $2 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" has no % connection', left($1, 80), left($2, 64) USING ERRCODE = 'no_data_found';
    END IF;
    IF s = 'needs_reauthorization' THEN
        RAISE EXCEPTION 'the % connection of tenant "%" needs re-authorization: call integ.connect with new credentials',
            left($2, 64), left($1, 80) USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE integ.connections c SET status = 'active', updated_at = now() WHERE c.tenant_id = $1 AND c.marketplace = $2;
    PERFORM integ.wake_workers_at_commit();
END
$$;

-- The operator has dealt with an alert.
CREATE FUNCTION integ.acknowledge_alert(id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
BEGIN
    SELECT a.tenant_id INTO t FROM integ.alerts a WHERE a.id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM integ.require_tenant(t);
    UPDATE integ.alerts a SET acknowledged_at = now(), acknowledged_by = session_user
     WHERE a.id = $1 AND a.acknowledged_at IS NULL;
END
$$;

-- How stock changes are captured now: 'message' (the trigger emits a WAL message, the capture
-- worker applies it) or 'table' (the trigger writes the outbox itself). applied_upto: every
-- change committed before this WAL position has been applied; unread_bytes: WAL written since;
-- retained_bytes: WAL the slot integ_capture keeps on disk for messages not yet decided.
CREATE VIEW integ.capture AS
SELECT CASE WHEN c.by_message THEN 'message' ELSE 'table' END AS mode,
       s.slot_name, s.wal_status,
       CASE WHEN c.applied_upto > 0 THEN '0/0'::pg_lsn + c.applied_upto END AS applied_upto,
       CASE WHEN c.applied_upto > 0 THEN (pg_catalog.pg_current_wal_lsn() - ('0/0'::pg_lsn + c.applied_upto))::bigint END
           AS unread_bytes,
       (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::bigint AS retained_bytes,
       c.messages_applied
  FROM integ.capture_counters() c
  LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = 'integ_capture';

-- Internal: used by the SECURITY DEFINER functions above, never by the application directly.
REVOKE EXECUTE ON FUNCTION integ.enqueue_stock(text, text, numeric) FROM PUBLIC;

-- ---- Roles, privileges and tenant isolation ---------------------------------------------------
-- integ_operator configures everything for every tenant; integ_application calls the sync,
-- webhook and status functions and, scoped with SET integ.tenant_id, sees and changes only that
-- tenant's rows. Grant them to login roles: GRANT integ_application TO egdc_app;
-- Neither can read integ.credential_store (the encrypted secrets) or the master key.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'integ_operator') THEN
        CREATE ROLE integ_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'integ_application') THEN
        CREATE ROLE integ_application NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA integ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA integ FROM PUBLIC;
GRANT USAGE ON SCHEMA integ TO integ_operator, integ_application;

-- every role may ask these (they only answer about the caller)
GRANT EXECUTE ON FUNCTION integ.tenant_visible(text), integ.require_tenant(text) TO PUBLIC;
-- the views call it; it answers only about connections the caller may see
GRANT EXECUTE ON FUNCTION integ.limiter_state() TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.verify_webhook(text, jsonb, bytea, jsonb), integ.signature(text, jsonb)
    TO integ_operator, integ_application;

GRANT EXECUTE ON FUNCTION
    integ.sync_product(text, text, text), integ.remote_stock(text, text, text),
    integ.receive_webhook(text, jsonb, bytea), integ.reconcile(text, text),
    integ.authorize_url(text, text, text, jsonb), integ.complete_authorization(text, jsonb)
    TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION
    integ.connect(text, text, jsonb, jsonb), integ.disconnect(text, text),
    integ.map_product(text, text, text, text, jsonb),
    integ.track_inventory(regclass, name, name, name), integ.untrack_inventory(regclass),
    integ.retry_dead(text, text), integ.pause(text, text), integ.resume(text, text),
    integ.resolve_conflict(bigint, text), integ.limiter_usage(), integ.register_app(text, jsonb, jsonb),
    integ.rotate_webhook_secret(text, text, text, interval)
    TO integ_operator;

GRANT SELECT ON integ.status, integ.rate_limits, integ.credentials TO integ_operator, integ_application;
GRANT SELECT ON integ.connections, integ.listings, integ.sync_jobs, integ.sync_log, integ.webhooks,
                integ.order_lines, integ.conflicts, integ.tracked_tables, integ.alerts
    TO integ_operator, integ_application;
GRANT UPDATE ON integ.connections, integ.listings, integ.conflicts TO integ_operator;
GRANT EXECUTE ON FUNCTION integ.acknowledge_alert(bigint) TO integ_operator;
GRANT SELECT ON integ.capture, integ.capture_state TO integ_operator;
GRANT EXECUTE ON FUNCTION integ.capture_counters() TO integ_operator;

-- Row-level security: the extension's owner (workers, SECURITY DEFINER functions) is not
-- subject to it; every other role sees the tenants integ.tenant_visible allows.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['connections', 'credential_store', 'listings', 'sync_jobs', 'sync_log', 'webhooks',
                             'order_lines', 'conflicts', 'alerts', 'authorizations']
    LOOP
        EXECUTE format('ALTER TABLE integ.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON integ.%I USING (integ.tenant_visible(tenant_id))
                            WITH CHECK (integ.tenant_visible(tenant_id))', t);
    END LOOP;
END
$$;
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

-- Installs the triggers that turn every committed price change of an EGDC table into price
-- pushes to the product's listings. The price may live in another table than the stock; it must
-- be numeric or an integer type: money is never a float.
CREATE FUNCTION integ.track_prices(products regclass, tenant_column name, product_column name, price_column name,
                                   currency_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col name;
    price_type regtype;
    currency_type regtype;
    cols name[] := ARRAY[tenant_column, product_column, price_column];
BEGIN
    PERFORM integ.require_tenant(NULL);
    IF products IS NULL OR tenant_column IS NULL OR product_column IS NULL OR price_column IS NULL THEN
        RAISE EXCEPTION 'integ.track_prices: products, tenant_column, product_column and price_column may not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = products AND relkind IN ('r', 'p')) THEN
        RAISE EXCEPTION 'integ.track_prices: % is not a table', products USING ERRCODE = 'wrong_object_type';
    END IF;
    IF currency_column IS NOT NULL THEN
        cols := cols || currency_column;
    END IF;
    IF (SELECT count(DISTINCT c) FROM unnest(cols) c) <> cardinality(cols) THEN
        RAISE EXCEPTION 'integ.track_prices: tenant, product, price (and currency) must be different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY cols LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = products AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'integ.track_prices: table % has no column "%"', products, col
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    SELECT atttypid::regtype INTO price_type FROM pg_attribute
     WHERE attrelid = products AND attname = price_column AND attnum > 0 AND NOT attisdropped;
    IF price_type NOT IN ('numeric'::regtype, 'smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'integ.track_prices: price column "%" is %: a price must be numeric (or an integer type), never a float or text',
                        price_column, price_type USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF currency_column IS NOT NULL THEN
        SELECT atttypid::regtype INTO currency_type FROM pg_attribute
         WHERE attrelid = products AND attname = currency_column AND attnum > 0 AND NOT attisdropped;
        IF currency_type NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
            RAISE EXCEPTION 'integ.track_prices: currency column "%" is %, expected text (an ISO 4217 code such as MXN)',
                            currency_column, currency_type USING ERRCODE = 'datatype_mismatch';
        END IF;
    END IF;

    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_price ON %s', products);
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_price_update ON %s', products);
    IF currency_column IS NULL THEN
        EXECUTE format('CREATE TRIGGER integ_track_price AFTER INSERT OR DELETE ON %s
                        FOR EACH ROW EXECUTE FUNCTION integ.track_price(%L, %L, %L)',
                       products, tenant_column, product_column, price_column);
        EXECUTE format('CREATE TRIGGER integ_track_price_update AFTER UPDATE OF %1$I, %2$I, %3$I ON %4$s
                        FOR EACH ROW EXECUTE FUNCTION integ.track_price(%1$L, %2$L, %3$L)',
                       tenant_column, product_column, price_column, products);
    ELSE
        EXECUTE format('CREATE TRIGGER integ_track_price AFTER INSERT OR DELETE ON %s
                        FOR EACH ROW EXECUTE FUNCTION integ.track_price(%L, %L, %L, %L)',
                       products, tenant_column, product_column, price_column, currency_column);
        EXECUTE format('CREATE TRIGGER integ_track_price_update AFTER UPDATE OF %1$I, %2$I, %3$I, %4$I ON %5$s
                        FOR EACH ROW EXECUTE FUNCTION integ.track_price(%1$L, %2$L, %3$L, %4$L)',
                       tenant_column, product_column, price_column, currency_column, products);
    END IF;

    INSERT INTO integ.tracked_price_tables (relid, table_name, tenant_column, product_column, price_column, currency_column)
    VALUES (products, products::text, tenant_column, product_column, price_column, currency_column)
    ON CONFLICT (relid) DO UPDATE
       SET table_name = EXCLUDED.table_name, tenant_column = EXCLUDED.tenant_column,
           product_column = EXCLUDED.product_column, price_column = EXCLUDED.price_column,
           currency_column = EXCLUDED.currency_column;

    -- Bring already-mapped listings to the table's current price. The capture applies changes
    -- to many listings in one transaction; seeding them in another order could deadlock with it,
    -- so writers of listings wait for this seed.
    LOCK TABLE integ.listings IN SHARE ROW EXCLUSIVE MODE;
    EXECUTE format('SELECT count(integ.enqueue_price(t.%1$I::text, t.%2$I::text, t.%3$I::numeric, %4$s)) FROM %5$s t
                     WHERE EXISTS (SELECT 1 FROM integ.listings l
                                    WHERE l.tenant_id = t.%1$I::text AND l.product_id = t.%2$I::text)',
                   tenant_column, product_column, price_column,
                   CASE WHEN currency_column IS NULL THEN 'NULL::text' ELSE format('t.%I::text', currency_column) END,
                   products);
END
$$;

CREATE FUNCTION integ.untrack_prices(products regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integ.require_tenant(NULL);
    IF NOT EXISTS (SELECT 1 FROM integ.tracked_price_tables WHERE relid = products) THEN
        RAISE EXCEPTION 'integ.untrack_prices: % is not tracked', products USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_price ON %s', products);
    EXECUTE format('DROP TRIGGER IF EXISTS integ_track_price_update ON %s', products);
    DELETE FROM integ.tracked_price_tables WHERE relid = products;
    -- without a price table left, prices are no longer synced
    IF NOT EXISTS (SELECT 1 FROM integ.tracked_price_tables) THEN
        UPDATE integ.listings SET desired_price = NULL, price_currency = NULL, desired_price_lsn = NULL
         WHERE desired_price_lsn IS NOT NULL;
    END IF;
END
$$;

-- EGDC's price of one product (and its currency) as the first tracked price table that has it
-- holds it now; tracked = false when none has it. (Not `found`: PL/pgSQL's own FOUND.)
CREATE FUNCTION integ.tracked_price(p_tenant text, p_product text, OUT tracked boolean, OUT price numeric, OUT currency text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    tracked := false;
    FOR t IN SELECT tt.* FROM integ.tracked_price_tables tt JOIN pg_class c ON c.oid = tt.relid ORDER BY tt.created_at LOOP
        EXECUTE format('SELECT %I::numeric, %s FROM %s WHERE %I::text = $1 AND %I::text = $2 LIMIT 1',
                       t.price_column,
                       CASE WHEN t.currency_column IS NULL THEN 'NULL::text' ELSE format('%I::text', t.currency_column) END,
                       t.relid::regclass, t.tenant_column, t.product_column)
           INTO price, currency USING p_tenant, p_product;
        GET DIAGNOSTICS n = ROW_COUNT;  -- EXECUTE does not set FOUND
        IF n > 0 THEN
            tracked := true;
            RETURN;
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION integ.seed_listing_price(p_tenant text, p_product text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record := integ.tracked_price(p_tenant, p_product);
BEGIN
    IF NOT p.tracked THEN
        RETURN false;
    END IF;
    PERFORM integ.enqueue_price(p_tenant, p_product, p.price, p.currency);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION integ.tracked_price(text, text), integ.seed_listing_price(text, text) FROM PUBLIC;

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
       coalesce(ls.consecutive_failures, 0) AS consecutive_failures,
       ws.summary AS webhooks
FROM integ.connections c
LEFT JOIN integ.limiter_state() ls ON ls.connection_id = c.id
-- the webhook subscriptions in one line: subscribed, manual (configured in the marketplace's
-- console), failing, skipped (no integ.webhook_base_url) or pending (not checked yet)
LEFT JOIN LATERAL (
    SELECT CASE
             WHEN count(*) = 0 THEN 'pending'
             WHEN bool_or(s.state = 'skipped') THEN 'skipped: integ.webhook_base_url is not set'
             WHEN bool_or(s.state = 'failed')
               THEN 'failing: ' || string_agg(s.topic, ', ' ORDER BY s.topic) FILTER (WHERE s.state = 'failed')
             WHEN bool_and(s.state = 'manual') THEN 'manual: enter ' || min(s.address) || ' in the marketplace''s console'
             ELSE 'subscribed' END AS summary
      FROM integ.webhook_subscriptions s
     WHERE s.connection_id = c.id
) ws ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'pending') AS pending,
           count(*) FILTER (WHERE j.state = 'in_flight') AS in_flight,
           count(*) FILTER (WHERE j.state = 'dead') AS dead,
           min(j.created_at) FILTER (WHERE j.state = 'pending') AS oldest_pending
    FROM integ.sync_jobs j
    -- three probes of (connection_id, state): a finished job is never read
    WHERE j.connection_id = c.id AND j.state IN ('pending', 'in_flight', 'dead')
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
    UPDATE integ.connections c SET status = 'active', updated_at = now(), subscriptions_due_at = now()
     WHERE c.tenant_id = $1 AND c.marketplace = $2;
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

-- What a readiness probe (the gateway's /readyz) needs to know, without reading other roles'
-- sessions: how many of the extension's workers run, whether the capture runs, and how much WAL
-- it has not applied yet.
CREATE FUNCTION integ.readiness(OUT workers integer, OUT capture_running boolean, OUT capture_unread_bytes bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*)::integer FROM pg_stat_activity WHERE backend_type = 'integration worker'),
           EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'integration capture'),
           (SELECT c.unread_bytes FROM integ.capture c)
$$;
REVOKE ALL ON FUNCTION integ.readiness() FROM PUBLIC;

-- ---- Catalog: imports, remote listings, linking by SKU -----------------------------------------

-- The EGDC products of a tenant (every tenant: NULL) in the tracked tables, with their stock.
CREATE FUNCTION integ.tracked_products(p_tenant text)
RETURNS TABLE (tenant_id text, product_id text, stock numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    -- callers see only the tenants they may (every tenant: operators)
    IF NOT integ.tenant_visible(p_tenant) THEN
        RETURN;
    END IF;
    FOR t IN SELECT tt.* FROM integ.tracked_tables tt JOIN pg_class c ON c.oid = tt.relid ORDER BY tt.created_at LOOP
        RETURN QUERY EXECUTE format('SELECT %I::text, %I::text, %I::numeric FROM %s WHERE $1 IS NULL OR %I::text = $1',
                                    t.tenant_column, t.product_column, t.stock_column, t.relid::regclass, t.tenant_column)
            USING p_tenant;
    END LOOP;
END
$$;

-- A seller SKU or product id as link_by_sku compares them (NULL: nothing to compare).
CREATE FUNCTION integ.normalize_sku(sku text, how text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := sku;
BEGIN
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    IF 'trim' = ANY (how) THEN
        v := btrim(v);
    END IF;
    IF 'upper' = ANY (how) THEN
        v := upper(v);
    END IF;
    IF 'strip_leading_zeros' = ANY (how) THEN
        v := regexp_replace(v, '^0+(?=.)', '');
    END IF;
    RETURN nullif(v, '');
END
$$;

-- link_by_sku's `adopt`: EGDC's stock of a product takes the marketplace's number, through the
-- tracked table (its trigger then publishes it to the other channels), only where EGDC has no
-- stock for it yet: NULL, or 0 while the product is listed nowhere.
CREATE FUNCTION integ.adopt_stock(p_tenant text, p_product text, p_stock bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    n bigint;
    unlisted boolean := NOT EXISTS (SELECT 1 FROM integ.listings l WHERE l.tenant_id = p_tenant AND l.product_id = p_product);
BEGIN
    IF p_stock IS NULL OR p_stock < 0 THEN
        RETURN false;
    END IF;
    FOR t IN SELECT tt.* FROM integ.tracked_tables tt JOIN pg_class c ON c.oid = tt.relid ORDER BY tt.created_at LOOP
        EXECUTE format('UPDATE %s SET %I = $3 WHERE %I::text = $1 AND %I::text = $2 AND (%I IS NULL OR (%I = 0 AND $4))',
                       t.relid::regclass, t.stock_column, t.tenant_column, t.product_column, t.stock_column, t.stock_column)
          USING p_tenant, p_product, p_stock, unlisted;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

-- Starts one catalog import per connection of the tenant (every one it has, or the
-- marketplace's); an import already running is returned, not started again.
CREATE FUNCTION integ.import_catalog(tenant_id text, marketplace text DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- marketplaces whose catalog the workers can read
    supported text[] := ARRAY['mercadolibre', 'shopify', 'tiktok', 'shein'];
    ids bigint[] := '{}';
    c record;
    seen boolean := false;
    running bigint;
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'tenant_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integ.require_tenant($1);
    IF $2 IS NOT NULL AND $2 NOT IN ('mercadolibre', 'shopify', 'tiktok', 'shein') THEN
        RAISE EXCEPTION 'unknown marketplace "%" (expected one of: mercadolibre, shopify, tiktok, shein)', left($2, 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR c IN SELECT x.id, x.tenant_id, x.marketplace, x.status, x.settings FROM integ.connections x
              WHERE x.tenant_id = $1 AND ($2 IS NULL OR x.marketplace = $2) ORDER BY x.id LOOP
        seen := true;
        IF c.marketplace <> ALL (supported) OR c.status <> 'active' THEN
            IF $2 IS NULL THEN
                CONTINUE;  -- every connection: those that can be imported
            ELSIF c.status <> 'active' THEN
                RAISE EXCEPTION 'the % connection of tenant "%" is %: its catalog cannot be imported now',
                                c.marketplace, left(c.tenant_id, 80), c.status USING ERRCODE = 'object_not_in_prerequisite_state';
            ELSE
                RAISE EXCEPTION 'importing the % catalog is not supported yet', c.marketplace
                    USING ERRCODE = 'feature_not_supported';
            END IF;
        END IF;
        IF c.marketplace = 'shopify' AND coalesce(c.settings ->> 'location_id', '') = '' THEN
            -- a Shopify listing is an inventory item at a location: the import maps them at this one
            RAISE EXCEPTION 'the shopify connection of tenant "%" has no settings.location_id: call integ.connect with the location whose stock EGDC syncs',
                            left(c.tenant_id, 80) USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        SELECT i.id INTO running FROM integ.catalog_imports i WHERE i.connection_id = c.id AND i.state = 'running';
        IF running IS NULL THEN
            INSERT INTO integ.catalog_imports (connection_id, tenant_id, marketplace)
            VALUES (c.id, c.tenant_id, c.marketplace) RETURNING id INTO running;
        END IF;
        ids := ids || running;
    END LOOP;
    IF NOT seen THEN
        RAISE EXCEPTION 'tenant "%" has no % connection: call integ.connect first', left($1, 80), coalesce($2, 'marketplace')
            USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(ids) > 0 THEN
        PERFORM integ.wake_workers_at_commit();
    END IF;
    RETURN ids;
END
$$;

-- Stops a running import (the worker makes no further call for it); false when it had ended.
CREATE FUNCTION integ.cancel_import(id bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t text;
BEGIN
    SELECT i.tenant_id INTO t FROM integ.catalog_imports i WHERE i.id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no catalog import %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM integ.require_tenant(t);
    UPDATE integ.catalog_imports i SET state = 'cancelled', finished_at = now(), updated_at = now(), cursor = NULL
     WHERE i.id = $1 AND i.state = 'running';
    RETURN FOUND;
END
$$;

-- Links the tenant's remote listings to its EGDC products whose product id is the listing's
-- seller SKU (after `normalize`). Never links an ambiguous SKU. See docs/sql-api.md.
CREATE FUNCTION integ.link_by_sku(tenant_id text, marketplace text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_tenant text := $1;
    p_market text := $2;
    how text[] := '{}';
    dry boolean := false;
    sync text := 'push';
    k text;
    r record;
    counts jsonb;
    samples jsonb;
BEGIN
    IF p_tenant IS NULL THEN
        RAISE EXCEPTION 'tenant_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integ.require_tenant(p_tenant);
    IF p_market IS NOT NULL AND p_market NOT IN ('mercadolibre', 'shopify', 'tiktok', 'shein') THEN
        RAISE EXCEPTION 'unknown marketplace "%" (expected one of: mercadolibre, shopify, tiktok, shein)', left(p_market, 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) LOOP
        IF k NOT IN ('normalize', 'dry_run', 'initial_sync') THEN
            RAISE EXCEPTION 'link_by_sku options: unknown key "%" (allowed: normalize, dry_run, initial_sync)', left(k, 64)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    CASE coalesce(jsonb_typeof(options -> 'normalize'), 'absent')
        WHEN 'string' THEN how := ARRAY[options ->> 'normalize'];
        WHEN 'array' THEN how := ARRAY(SELECT jsonb_array_elements_text(options -> 'normalize'));
        WHEN 'absent' THEN how := '{}';
        ELSE RAISE EXCEPTION 'options.normalize must be a string or an array of strings' USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    SELECT n INTO k FROM unnest(how) n WHERE n IS NULL OR n NOT IN ('trim', 'upper', 'strip_leading_zeros') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'options.normalize: unknown "%" (allowed: trim, upper, strip_leading_zeros)', left(coalesce(k, 'null'), 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options ? 'dry_run' THEN
        IF jsonb_typeof(options -> 'dry_run') <> 'boolean' THEN
            RAISE EXCEPTION 'options.dry_run must be true or false' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        dry := (options ->> 'dry_run')::boolean;
    END IF;
    IF options ? 'initial_sync' THEN
        sync := options ->> 'initial_sync';
        IF sync IS NULL OR sync NOT IN ('push', 'adopt', 'none') THEN
            RAISE EXCEPTION 'options.initial_sync must be "push", "adopt" or "none"' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM integ.connections c WHERE c.tenant_id = p_tenant AND (p_market IS NULL OR c.marketplace = p_market)) THEN
        RAISE EXCEPTION 'tenant "%" has no % connection: call integ.connect first', left(p_tenant, 80), coalesce(p_market, 'marketplace')
            USING ERRCODE = 'no_data_found';
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS integ_link_verdicts (
        id bigint, connection_id bigint, marketplace text, external_id text, variation text, settings jsonb,
        seller_sku text, remote_stock bigint, product_id text, verdict text, products text[]
    ) ON COMMIT DROP;
    TRUNCATE integ_link_verdicts;
    WITH p AS (
        SELECT DISTINCT t.product_id, integ.normalize_sku(t.product_id, how) AS key
          FROM integ.tracked_products(p_tenant) t),
    pk AS (
        SELECT key, count(*) AS n, min(product_id) AS product_id, array_agg(product_id ORDER BY product_id) AS ids
          FROM p WHERE key IS NOT NULL GROUP BY key),
    r AS (
        SELECT rl.*, integ.normalize_sku(rl.seller_sku, how) AS key
          FROM integ.remote_listings rl
         WHERE rl.tenant_id = p_tenant AND (p_market IS NULL OR rl.marketplace = p_market) AND rl.gone_at IS NULL),
    rk AS (
        SELECT connection_id, key, count(*) AS n FROM r WHERE key IS NOT NULL GROUP BY connection_id, key)
    INSERT INTO integ_link_verdicts
    SELECT r.id, r.connection_id, r.marketplace, r.external_id, r.variation, r.settings, r.seller_sku, r.remote_stock,
           pk.product_id,
           CASE WHEN EXISTS (SELECT 1 FROM integ.listings l
                              WHERE l.connection_id = r.connection_id AND l.external_id = r.external_id
                                AND (r.variation = '' OR l.settings ->> 'variation_id' = r.variation)) THEN 'already_linked'
                WHEN r.key IS NULL THEN 'without_sku'
                WHEN rk.n > 1 OR pk.n > 1 THEN 'ambiguous'
                WHEN pk.key IS NULL THEN 'listings_without_product'
                WHEN EXISTS (SELECT 1 FROM integ.listings l
                              WHERE l.tenant_id = p_tenant AND l.marketplace = r.marketplace AND l.product_id = pk.product_id)
                     THEN 'product_linked_elsewhere'
                ELSE 'linked' END,
           pk.ids
      FROM r
      LEFT JOIN rk ON rk.connection_id = r.connection_id AND rk.key = r.key
      LEFT JOIN pk ON pk.key = r.key;

    IF NOT dry THEN
        FOR r IN SELECT * FROM integ_link_verdicts WHERE verdict = 'linked' ORDER BY id LOOP
            IF sync = 'adopt' THEN
                PERFORM integ.adopt_stock(p_tenant, r.product_id, r.remote_stock);
            END IF;
            PERFORM integ.map_product(p_tenant, r.marketplace, r.product_id, r.external_id, r.settings);
            -- what the marketplace holds: an equal first push is skipped
            UPDATE integ.listings l SET remote_stock = least(r.remote_stock, 2147483647)::int
             WHERE l.tenant_id = p_tenant AND l.marketplace = r.marketplace AND l.product_id = r.product_id;
            IF sync = 'none' THEN
                DELETE FROM integ.sync_jobs j USING integ.listings l
                 WHERE j.listing_id = l.id AND j.state = 'pending'
                   AND l.tenant_id = p_tenant AND l.marketplace = r.marketplace AND l.product_id = r.product_id;
            END IF;
        END LOOP;
    END IF;

    SELECT jsonb_object_agg(v, n) INTO counts FROM (
        SELECT v, (SELECT count(*) FROM integ_link_verdicts x WHERE x.verdict = v) AS n
          FROM unnest(ARRAY['linked', 'already_linked', 'ambiguous', 'listings_without_product', 'without_sku',
                            'product_linked_elsewhere']) v) c;
    SELECT jsonb_build_object(
        'ambiguous', coalesce((SELECT jsonb_agg(s) FROM (
            SELECT jsonb_build_object('seller_sku', x.seller_sku, 'marketplace', x.marketplace,
                                      'external_ids', array_agg(x.external_id || CASE WHEN x.variation <> '' THEN '/' || x.variation ELSE '' END),
                                      'products', min(x.products)) AS s
              FROM integ_link_verdicts x WHERE x.verdict = 'ambiguous'
             GROUP BY x.marketplace, x.seller_sku ORDER BY x.seller_sku LIMIT 10) a), '[]'),
        'listings_without_product', coalesce((SELECT jsonb_agg(x.seller_sku ORDER BY x.seller_sku) FROM (
            SELECT seller_sku FROM integ_link_verdicts WHERE verdict = 'listings_without_product' ORDER BY seller_sku LIMIT 10) x), '[]'),
        'without_sku', coalesce((SELECT jsonb_agg(x.e ORDER BY x.e) FROM (
            SELECT external_id || CASE WHEN variation <> '' THEN '/' || variation ELSE '' END AS e
              FROM integ_link_verdicts WHERE verdict = 'without_sku' ORDER BY 1 LIMIT 10) x), '[]'))
      INTO samples;
    counts := counts || jsonb_build_object(
        'dry_run', dry,
        'products_without_listing', (
            SELECT count(*) FROM (SELECT DISTINCT t.product_id FROM integ.tracked_products(p_tenant) t) p
             WHERE NOT EXISTS (SELECT 1 FROM integ.listings l WHERE l.tenant_id = p_tenant AND l.product_id = p.product_id
                                  AND (p_market IS NULL OR l.marketplace = p_market))
               AND NOT (dry AND EXISTS (SELECT 1 FROM integ_link_verdicts x WHERE x.verdict = 'linked' AND x.product_id = p.product_id))),
        'samples', samples);
    DROP TABLE integ_link_verdicts;
    RETURN counts;
END
$$;

CREATE VIEW integ.imports AS
SELECT i.id, i.tenant_id, i.marketplace, i.state, i.listings_seen, i.pages, i.api_calls, i.passes,
       i.started_at, i.finished_at, i.error,
       CASE WHEN i.state = 'done' THEN 100.0
            WHEN i.total > 0 THEN least(99.9, round(100.0 * i.discovered / i.total, 1)) END AS progress
  FROM integ.catalog_imports i
 WHERE integ.tenant_visible(i.tenant_id);

CREATE VIEW integ.unlinked AS
SELECT r.tenant_id, r.marketplace, 'listing'::text AS kind, r.external_id, nullif(r.variation, '') AS variation,
       r.seller_sku, NULL::text AS product_id,
       CASE WHEN r.seller_sku IS NULL THEN 'the listing has no seller SKU'
            ELSE 'not linked: no EGDC product has this SKU, or it is ambiguous (integ.link_by_sku says which)' END AS reason
  FROM integ.remote_listings r
 WHERE r.gone_at IS NULL AND integ.tenant_visible(r.tenant_id)
   AND NOT EXISTS (SELECT 1 FROM integ.listings l
                    WHERE l.connection_id = r.connection_id AND l.external_id = r.external_id
                      AND (r.variation = '' OR l.settings ->> 'variation_id' = r.variation))
UNION ALL
SELECT c.tenant_id, c.marketplace, 'product', NULL, NULL, NULL, t.product_id,
       'no listing on this connected marketplace'
  FROM integ.connections c
  JOIN LATERAL (SELECT DISTINCT tp.product_id FROM integ.tracked_products(c.tenant_id) tp) t ON true
 WHERE integ.tenant_visible(c.tenant_id)
   AND NOT EXISTS (SELECT 1 FROM integ.listings l
                    WHERE l.tenant_id = c.tenant_id AND l.marketplace = c.marketplace AND l.product_id = t.product_id);

-- Internal: used by the SECURITY DEFINER functions above, never by the application directly.
REVOKE EXECUTE ON FUNCTION integ.enqueue_stock(text, text, numeric) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION integ.enqueue_price(text, text, numeric, text) FROM PUBLIC;

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

-- Each connection's webhook subscriptions: topic, address, state, the marketplace's id, when
-- the workers last checked it, and the last error.
CREATE VIEW integ.subscriptions AS
SELECT c.tenant_id, c.marketplace, s.connection_id, s.topic, s.address, s.state, s.remote_id, s.checked_at, s.error
  FROM integ.webhook_subscriptions s JOIN integ.connections c ON c.id = s.connection_id
 WHERE integ.tenant_visible(c.tenant_id);

-- A stored webhook body as JSON (NULL: not JSON, e.g. a SHEIN form, or reduced away).
CREATE FUNCTION integ.body_json(p_body bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN convert_from(p_body, 'UTF8')::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- What the extension holds about one customer of a Shopify shop (customers/data_request):
-- the deliveries that name the customer or an order of theirs, the ledger lines of those
-- orders, and the privacy requests received for them.
CREATE FUNCTION integ.customer_data(shop text, customer_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    conn integ.connections;
    v_orders text[];
    deliveries jsonb;
    ledger jsonb;
    requests jsonb;
BEGIN
    SELECT c.* INTO conn FROM integ.connections c JOIN integ.credential_store k ON k.connection_id = c.id
     WHERE c.marketplace = 'shopify' AND k.identifiers ->> 'shop' = $1;
    IF conn.id IS NOT NULL THEN
        PERFORM integ.require_tenant(conn.tenant_id);
    ELSIF NOT EXISTS (SELECT 1 FROM integ.privacy_requests r WHERE r.shop = $1 AND integ.tenant_visible(r.tenant_id)) THEN
        RAISE EXCEPTION 'no Shopify shop "%" is connected or known', left($1, 200) USING ERRCODE = 'no_data_found';
    END IF;
    SELECT coalesce(jsonb_agg(to_jsonb(r) - 'tenant_id' ORDER BY r.id), '[]'), coalesce(array_agg(DISTINCT o), '{}')
      INTO requests, v_orders
      FROM integ.privacy_requests r LEFT JOIN LATERAL unnest(r.orders) o ON true
     WHERE r.shop = $1 AND r.customer_id = $2 AND integ.tenant_visible(r.tenant_id);
    SELECT coalesce(jsonb_agg(jsonb_build_object('webhook_id', w.id, 'received_at', w.received_at, 'topic', w.topic,
                                                 'state', w.state, 'reduced', w.body_reduced, 'body', w.b) ORDER BY w.id), '[]')
      INTO deliveries
      FROM (SELECT w.*, integ.body_json(w.body) AS b FROM integ.webhooks w
             WHERE w.connection_id = conn.id AND w.status = 'accepted') w
     WHERE w.b #>> '{customer,id}' = $2 OR w.b ->> 'id' = ANY (v_orders);
    SELECT coalesce(array_agg(DISTINCT x), '{}') INTO v_orders
      FROM (SELECT unnest(v_orders) x
            UNION SELECT d ->> 'id' FROM jsonb_array_elements(deliveries) e, LATERAL (SELECT e -> 'body' AS d) b
             WHERE d ? 'line_items') u WHERE x IS NOT NULL;
    SELECT coalesce(jsonb_agg(to_jsonb(l) - 'tenant_id' ORDER BY l.order_id, l.line_id), '[]') INTO ledger
      FROM integ.order_lines l
     WHERE l.marketplace = 'shopify' AND l.tenant_id = conn.tenant_id AND l.order_id = ANY (v_orders);
    RETURN jsonb_build_object('shop', $1, 'customer_id', $2, 'deliveries', deliveries, 'order_lines', ledger,
                              'privacy_requests', requests);
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
    integ.track_prices(regclass, name, name, name, name), integ.untrack_prices(regclass),
    integ.retry_dead(text, text), integ.pause(text, text), integ.resume(text, text),
    integ.resolve_conflict(bigint, text), integ.limiter_usage(), integ.register_app(text, jsonb, jsonb),
    integ.rotate_webhook_secret(text, text, text, interval)
    TO integ_operator;

GRANT SELECT ON integ.status, integ.rate_limits, integ.credentials TO integ_operator, integ_application;
GRANT SELECT ON integ.connections, integ.listings, integ.sync_jobs, integ.sync_log, integ.webhooks,
                integ.order_lines, integ.conflicts, integ.tracked_tables, integ.tracked_price_tables, integ.alerts
    TO integ_operator, integ_application;
GRANT UPDATE ON integ.connections, integ.listings, integ.conflicts TO integ_operator;
GRANT EXECUTE ON FUNCTION integ.acknowledge_alert(bigint) TO integ_operator;
GRANT SELECT ON integ.capture, integ.capture_state TO integ_operator;
GRANT EXECUTE ON FUNCTION integ.capture_counters() TO integ_operator;
GRANT SELECT ON integ.imports, integ.unlinked, integ.remote_listings TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.import_catalog(text, text), integ.cancel_import(bigint),
    integ.link_by_sku(text, text, jsonb), integ.tracked_products(text), integ.normalize_sku(text, text[])
    TO integ_operator, integ_application;
GRANT SELECT ON integ.subscriptions TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.customer_data(text, text) TO integ_operator;

-- Row-level security: the extension's owner (workers, SECURITY DEFINER functions) is not
-- subject to it; every other role sees the tenants integ.tenant_visible allows.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['connections', 'credential_store', 'listings', 'sync_jobs', 'sync_log', 'webhooks',
                             'order_lines', 'conflicts', 'alerts', 'authorizations', 'catalog_imports', 'remote_listings',
                             'usage', 'health_buckets', 'health_windows']
    LOOP
        EXECUTE format('ALTER TABLE integ.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON integ.%I USING (integ.tenant_visible(tenant_id))
                            WITH CHECK (integ.tenant_visible(tenant_id))', t);
    END LOOP;
END
$$;

-- Operations (operations.sql)
GRANT SELECT ON integ.health, integ.usage, integ.health_buckets TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.readiness() TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.usage_report(text, timestamptz, timestamptz), integ.metrics(),
    integ.hold(text, text, text), integ.release(text, text, text), integ.revert(text, timestamptz, text, boolean),
    -- integ.health calls them
    integ.histogram_sum(bigint[]), integ.histogram_quantile(bigint[], double precision, double precision)
    TO integ_operator, integ_application;

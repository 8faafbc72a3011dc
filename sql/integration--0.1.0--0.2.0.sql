-- integration 0.1.0 -> 0.2.0, run by ALTER EXTENSION integration UPDATE.
-- 0.2.0 is in development: this script grows with it until v0.2.0 is tagged, and is never
-- edited after that. An upgraded database must equal a fresh 0.2.0 install (tests/upgrade.rs).
\echo Use "ALTER EXTENSION integration UPDATE" to load this file. \quit

-- Capture state that survives the slot (a failover, a restore, pg_upgrade): issue "A stock change
-- committed before a failover never reaches the marketplace". An upgraded database that was
-- capturing by message still has its slot: the capture worker adopts it without a re-read.
CREATE TABLE integ.capture_state (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    by_message   boolean NOT NULL DEFAULT false,
    slot_restart pg_lsn,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO integ.capture_state DEFAULT VALUES;

GRANT SELECT ON integ.capture_state TO integ_operator;

-- Reconciliation compares the marketplace with EGDC's stock as its tables hold it now:
-- integ.tracked_stock reads it, and integ.seed_listing_stock is written with it.
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

CREATE OR REPLACE FUNCTION integ.seed_listing_stock(p_tenant text, p_product text)
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
REVOKE ALL ON FUNCTION integ.tracked_stock(text, text) FROM PUBLIC;

-- Order lines never wrap or clamp EGDC's stock: a change that would leave the stock column's
-- range is refused with a clear reason (the delivery is dead, not retried).
CREATE OR REPLACE FUNCTION integ.adjust_stock(p_tenant text, p_product text, p_delta numeric)
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

-- Connection settings are checked from 0.2.0 on: integ.connect refuses unknown keys. Rows
-- written before keep working (unknown keys were always ignored); they are reported once here.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.id, c.tenant_id, c.marketplace, string_agg(k, ', ' ORDER BY k) AS keys
          FROM integ.connections c, jsonb_object_keys(c.settings) k
         WHERE jsonb_typeof(c.settings) = 'object'
           AND k NOT IN ('base_url', 'conflict_strategy', 'price_rules', 'rate_limit', 'stock_rules')
           AND NOT (c.marketplace = 'shopify' AND k IN ('api_version', 'location_id'))
           AND NOT (c.marketplace = 'shein' AND k = 'webhook_path')
         GROUP BY c.id, c.tenant_id, c.marketplace
    LOOP
        RAISE WARNING 'integration: connection % (tenant "%", %) has settings keys integ.connect now refuses: % (kept, and ignored as before)',
                      r.id, left(r.tenant_id, 80), r.marketplace, left(r.keys, 200);
    END LOOP;
END
$$;

-- Catalog: imports of every marketplace's listings into integ.remote_listings, linked to EGDC
-- products by SKU (issue "Catalog").
-- One catalog import of a connection (integ.import_catalog); the workers page through the
-- marketplace's catalog into integ.remote_listings, resuming from `cursor` after a restart.
CREATE TABLE integ.catalog_imports (
    id              bigserial PRIMARY KEY,
    connection_id   bigint NOT NULL REFERENCES integ.connections (id) ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    marketplace     text NOT NULL,
    state           text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed', 'cancelled')),
    -- the marketplace's cursor (scroll id, page token) where the current listing pass goes on
    cursor          text,
    -- listing passes started (one more each time an expired cursor restarts the pass)
    passes          integer NOT NULL DEFAULT 1,
    listings_seen   bigint NOT NULL DEFAULT 0,
    -- the marketplace's own units (items, products) the current pass went through
    discovered      bigint NOT NULL DEFAULT 0,
    pages           bigint NOT NULL DEFAULT 0,
    api_calls       bigint NOT NULL DEFAULT 0,
    -- how many the marketplace says there are (its own unit: items, products), when it says
    total           bigint,
    -- consecutive failed pages (network, 5xx): the import fails after integ.max_attempts
    failures        integer NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text,
    -- api_calls already counted in integ.usage
    calls_rolled    bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX catalog_imports_one_running ON integ.catalog_imports (connection_id) WHERE state = 'running';

-- What the marketplaces hold: one row per listing unit integ.map_product can take, keyed as it
-- takes them. Imports (and later webhooks and reconciliation reads) keep it current; a row not
-- seen again by a finished import is `gone`.
CREATE TABLE integ.remote_listings (
    id            bigserial PRIMARY KEY,
    connection_id bigint NOT NULL REFERENCES integ.connections (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    marketplace   text NOT NULL,
    external_id   text NOT NULL,
    -- the variation where one external id has several units, else ''
    variation     text NOT NULL DEFAULT '',
    -- the listing settings integ.map_product takes for this unit
    settings      jsonb NOT NULL DEFAULT '{}',
    seller_sku    text,
    title         text,
    price         numeric CHECK (price >= 0),
    currency      text,
    remote_stock  bigint,
    status        text,
    url           text,
    raw           jsonb,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    gone_at       timestamptz,
    UNIQUE (connection_id, external_id, variation)
);
CREATE INDEX remote_listings_by_sku ON integ.remote_listings (tenant_id, marketplace, seller_sku);

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

REVOKE ALL ON integ.catalog_imports, integ.remote_listings, integ.imports, integ.unlinked FROM PUBLIC;
REVOKE ALL ON FUNCTION integ.tracked_products(text), integ.normalize_sku(text, text[]), integ.adopt_stock(text, text, bigint),
    integ.import_catalog(text, text), integ.cancel_import(bigint), integ.link_by_sku(text, text, jsonb) FROM PUBLIC;
GRANT SELECT ON integ.imports, integ.unlinked, integ.remote_listings TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.import_catalog(text, text), integ.cancel_import(bigint),
    integ.link_by_sku(text, text, jsonb), integ.tracked_products(text), integ.normalize_sku(text, text[])
    TO integ_operator, integ_application;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['catalog_imports', 'remote_listings'] LOOP
        EXECUTE format('ALTER TABLE integ.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON integ.%I USING (integ.tenant_visible(tenant_id))
                            WITH CHECK (integ.tenant_visible(tenant_id))', t);
    END LOOP;
END
$$;

-- A marketplace's stock outside 0..integ.max_stock is a conflict to review, kept exactly.
ALTER TABLE integ.conflicts ALTER COLUMN remote_stock TYPE bigint;
ALTER TABLE integ.conflicts ADD COLUMN reason text;

-- Prices (issue "Prices"): EGDC's price changes are captured like stock and pushed through the
-- same jobs, shaped by each channel's price rules.
CREATE TABLE integ.tracked_price_tables (
    relid           oid PRIMARY KEY,
    table_name      text NOT NULL,
    tenant_column   name NOT NULL,
    product_column  name NOT NULL,
    price_column    name NOT NULL,
    currency_column name,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE integ.listings
    ADD COLUMN desired_price numeric,
    ADD COLUMN price_currency text,
    ADD COLUMN desired_price_at timestamptz,
    ADD COLUMN desired_price_lsn bigint,
    ADD COLUMN last_pushed_price numeric,
    ADD COLUMN last_pushed_price_at timestamptz,
    ADD COLUMN remote_price numeric,
    ADD COLUMN price_refused_lsn bigint;
ALTER TABLE integ.listings ADD COLUMN held_since timestamptz, ADD COLUMN revert_stock integer,
    ADD COLUMN revert_price numeric;
ALTER TABLE integ.sync_jobs ADD COLUMN price_only boolean NOT NULL DEFAULT false;
ALTER TABLE integ.sync_jobs ADD COLUMN recheck_price_lsn bigint;
ALTER TABLE integ.sync_log ADD COLUMN price numeric, ADD COLUMN egdc_price numeric;
ALTER TABLE integ.sync_log ADD COLUMN calls integer NOT NULL DEFAULT 0;

CREATE FUNCTION integ."enqueue_price"(
	"p_tenant" TEXT,
	"p_product" TEXT,
	"p_price" NUMERIC,
	"p_currency" TEXT
) RETURNS INT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'enqueue_price_wrapper';
CREATE FUNCTION integ."track_price"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'track_price_wrapper';
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

REVOKE ALL ON integ.tracked_price_tables FROM PUBLIC;
REVOKE ALL ON FUNCTION integ.enqueue_price(text, text, numeric, text), integ.track_price(),
    integ.track_prices(regclass, name, name, name, name), integ.untrack_prices(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION integ.track_prices(regclass, name, name, name, name), integ.untrack_prices(regclass)
    TO integ_operator;
GRANT SELECT ON integ.tracked_price_tables TO integ_operator, integ_application;

-- sync_product and remote_stock answer about prices too (new columns after the old ones)
DROP FUNCTION integ.sync_product(text, text, text);
DROP FUNCTION integ.remote_stock(text, text, text);
CREATE FUNCTION integ."sync_product"(
	"tenant_id" TEXT,
	"product_id" TEXT,
	"marketplace" TEXT DEFAULT NULL
) RETURNS TABLE (
	"marketplace" TEXT,
	"external_id" TEXT,
	"status" TEXT,
	"stock" INT,
	"http_status" INT,
	"error" TEXT,
	"price" NUMERIC,
	"price_status" TEXT,
	"price_error" TEXT
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sync_product_wrapper';
CREATE FUNCTION integ."remote_stock"(
	"tenant_id" TEXT,
	"product_id" TEXT,
	"marketplace" TEXT DEFAULT NULL
) RETURNS TABLE (
	"marketplace" TEXT,
	"external_id" TEXT,
	"remote_stock" bigint,
	"egdc_stock" INT,
	"error" TEXT,
	"remote_price" NUMERIC
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'remote_stock_wrapper';
REVOKE ALL ON FUNCTION integ.sync_product(text, text, text), integ.remote_stock(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION integ.sync_product(text, text, text), integ.remote_stock(text, text, text)
    TO integ_operator, integ_application;

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

-- dead jobs per connection without reading the others (integ.metrics)
CREATE INDEX sync_jobs_dead ON integ.sync_jobs (connection_id) WHERE state = 'dead';

-- Per connection: queue depth, oldest pending age, dead count, last success, last error.
CREATE OR REPLACE VIEW integ.status AS
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
    -- three probes of (connection_id, state): a finished job is never read
    WHERE j.connection_id = c.id AND j.state IN ('pending', 'in_flight', 'dead')
) q ON true
WHERE integ.tenant_visible(c.tenant_id);

ALTER TABLE integ.alerts ADD COLUMN clear_since timestamptz, ADD COLUMN resolved_at timestamptz;

-- Operations: what the sync log and the webhook table say, rolled up by the first worker
-- (integ.roll_up) in the transaction that moves its watermark, so every figure is exact and
-- survives crashes, and the sync log can be pruned without changing any.

-- Usage for billing: per tenant, marketplace and hour. Never pruned.
CREATE TABLE integ.usage (
    tenant_id          text NOT NULL,
    marketplace        text NOT NULL,
    hour               timestamptz NOT NULL,
    push_calls         bigint NOT NULL DEFAULT 0,
    read_calls         bigint NOT NULL DEFAULT 0,
    import_calls       bigint NOT NULL DEFAULT 0,
    token_calls        bigint NOT NULL DEFAULT 0,
    order_fetch_calls  bigint NOT NULL DEFAULT 0,
    pushes             bigint NOT NULL DEFAULT 0,
    failures           bigint NOT NULL DEFAULT 0,
    throttled          bigint NOT NULL DEFAULT 0,
    webhooks_received  bigint NOT NULL DEFAULT 0,
    webhooks_accepted  bigint NOT NULL DEFAULT 0,
    webhooks_duplicate bigint NOT NULL DEFAULT 0,
    webhooks_rejected  bigint NOT NULL DEFAULT 0,
    orders_applied     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, marketplace, hour)
);

-- Health per connection in 10-second buckets (kept 15 minutes, for the alert rules), minute
-- buckets (kept 2 hours), hour buckets (kept 2 days), and one bucket of width 0 counting since
-- the extension was installed (never pruned: integ.metrics()' counters).
-- Latencies are histograms over integ.histogram_bounds_ms().
CREATE TABLE integ.health_buckets (
    connection_id      bigint NOT NULL,
    tenant_id          text NOT NULL,
    marketplace        text NOT NULL,
    width_s            integer NOT NULL CHECK (width_s IN (0, 10, 60, 3600)),
    start              timestamptz NOT NULL,
    calls              bigint NOT NULL DEFAULT 0,
    successes          bigint NOT NULL DEFAULT 0,
    failures           bigint NOT NULL DEFAULT 0,
    throttled          bigint NOT NULL DEFAULT 0,
    pushes             bigint NOT NULL DEFAULT 0,
    dead               bigint NOT NULL DEFAULT 0,
    latency_ms         bigint[],
    latency_max_ms     double precision,
    latency_ms_sum     double precision NOT NULL DEFAULT 0,
    webhooks_received  bigint NOT NULL DEFAULT 0,
    webhooks_accepted  bigint NOT NULL DEFAULT 0,
    webhooks_duplicate bigint NOT NULL DEFAULT 0,
    webhooks_rejected  bigint NOT NULL DEFAULT 0,
    webhooks_processed bigint NOT NULL DEFAULT 0,
    webhook_ms_sum     double precision NOT NULL DEFAULT 0,
    webhook_ms         bigint[],
    PRIMARY KEY (connection_id, width_s, start)
) PARTITION BY LIST (width_s);
-- one partition per width: the since-install rows stay together (integ.metrics() reads all of
-- them; mixed among the others they filled 7,500 pages at 10,000 connections), with room on each
-- page: every roll-up updates them, and an update that stays on its page (HOT) is pruned in place
-- rather than leaving the old row behind (full pages grew it to 7,651 pages for 10,000 rows)
CREATE TABLE integ.health_buckets_total PARTITION OF integ.health_buckets FOR VALUES IN (0) WITH (fillfactor = 40);
CREATE TABLE integ.health_buckets_10s PARTITION OF integ.health_buckets FOR VALUES IN (10);
CREATE TABLE integ.health_buckets_1m PARTITION OF integ.health_buckets FOR VALUES IN (60);
CREATE TABLE integ.health_buckets_1h PARTITION OF integ.health_buckets FOR VALUES IN (3600);
CREATE INDEX health_buckets_by_start ON integ.health_buckets (width_s, start);

-- What integ.health shows per connection and window (5m, 1h, 1d): the sums of the window's
-- buckets, recomputed by the roll-up for the connections it counted rows of and those whose
-- oldest bucket of a window left it, so integ.health reads one row per connection and window.
CREATE TABLE integ.health_windows (
    connection_id      bigint NOT NULL,
    tenant_id          text NOT NULL,
    marketplace        text NOT NULL,
    "window"           text NOT NULL CHECK ("window" IN ('5m', '1h', '1d')),
    calls              bigint NOT NULL,
    successes          bigint NOT NULL,
    failures           bigint NOT NULL,
    throttled          bigint NOT NULL,
    pushes             bigint NOT NULL,
    dead               bigint NOT NULL,
    latency_ms         bigint[],
    latency_max_ms     double precision,
    webhooks_received  bigint NOT NULL,
    webhooks_processed bigint NOT NULL,
    webhook_ms_sum     double precision NOT NULL,
    webhook_ms         bigint[],
    PRIMARY KEY (connection_id, "window")
);

-- Where each roll-up stands: every row of `source` with an id up to `watermark` is counted,
-- except the ids in integ.rollup_gaps (not visible yet when the watermark passed them).
CREATE TABLE integ.rollup_state (
    source     text PRIMARY KEY CHECK (source IN ('sync_log', 'webhooks', 'health_windows')),
    watermark  bigint NOT NULL DEFAULT 0,
    rolled_at  timestamptz
);
-- 'health_windows': when integ.health_windows were last brought up to date (NULL: recount all)
INSERT INTO integ.rollup_state (source) VALUES ('sync_log'), ('webhooks'), ('health_windows');

-- Ids below a watermark that were not visible when it passed them: a transaction still in
-- progress then (counted when it commits) or rolled back (forgotten once every transaction of
-- that time has ended).
CREATE TABLE integ.rollup_gaps (
    source     text NOT NULL,
    id         bigint NOT NULL,
    noted_at   timestamptz NOT NULL DEFAULT now(),
    noted_xmax xid8 NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE FUNCTION integ."histogram_add"(
	"a" bigint[],
	"b" bigint[]
) RETURNS bigint[]
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'histogram_add_wrapper';
CREATE FUNCTION integ."histogram_bounds_ms"() RETURNS double precision[]
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'histogram_bounds_ms_wrapper';
CREATE FUNCTION integ."histogram_count"(
	"state" bigint[],
	"ms" double precision
) RETURNS bigint[]
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'histogram_count_wrapper';
CREATE FUNCTION integ."histogram_quantile"(
	"h" bigint[],
	"q" double precision,
	"max_ms" double precision
) RETURNS double precision
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'histogram_quantile_wrapper';
CREATE FUNCTION integ."json_count"(
	"document" TEXT,
	"key" TEXT
) RETURNS bigint
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'json_count_wrapper';
CREATE FUNCTION integ."metrics"() RETURNS TEXT
STRICT STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'metrics_wrapper';

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

ALTER TABLE integ.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON integ.usage USING (integ.tenant_visible(tenant_id)) WITH CHECK (integ.tenant_visible(tenant_id));
ALTER TABLE integ.health_windows ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON integ.health_windows USING (integ.tenant_visible(tenant_id))
    WITH CHECK (integ.tenant_visible(tenant_id));
ALTER TABLE integ.health_buckets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON integ.health_buckets USING (integ.tenant_visible(tenant_id))
    WITH CHECK (integ.tenant_visible(tenant_id));
REVOKE ALL ON integ.usage, integ.health_buckets, integ.health_buckets_total, integ.health_buckets_10s,
    integ.health_buckets_1m, integ.health_buckets_1h, integ.health_windows, integ.rollup_state, integ.rollup_gaps, integ.health FROM PUBLIC;
GRANT SELECT ON integ.health, integ.usage, integ.health_buckets TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.readiness() TO integ_operator, integ_application;
REVOKE ALL ON FUNCTION integ.histogram_add(bigint[], bigint[]), integ.histogram_bounds_ms(),
    integ.histogram_count(bigint[], double precision), integ.histogram_quantile(bigint[], double precision, double precision),
    integ.json_count(text, text), integ.metrics(), integ.latency_histogram(double precision),
    integ.histogram_sum(bigint[]), integ.usage_report(text, timestamptz, timestamptz), integ.hold(text, text, text),
    integ.release(text, text, text), integ.revert(text, timestamptz, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION integ.usage_report(text, timestamptz, timestamptz), integ.metrics(),
    integ.hold(text, text, text), integ.release(text, text, text), integ.revert(text, timestamptz, text, boolean),
    -- integ.health calls them
    integ.histogram_sum(bigint[]), integ.histogram_quantile(bigint[], double precision, double precision)
    TO integ_operator, integ_application;

-- Webhook subscriptions, uninstalls and Shopify's privacy topics (issue "Webhook subscriptions"):
-- the workers subscribe every connection at integ.webhook_base_url; applied deliveries keep only
-- the fields processing read.
ALTER TABLE integ.connections ADD COLUMN subscriptions_due_at timestamptz DEFAULT now();
CREATE INDEX connections_subscriptions_due ON integ.connections (subscriptions_due_at)
    WHERE subscriptions_due_at IS NOT NULL;
ALTER TABLE integ.webhooks ADD COLUMN body_reduced boolean NOT NULL DEFAULT false;

-- Webhook subscriptions: each connection's topics at the marketplace, as the workers last found
-- or made them (integ.subscriptions shows them). MercadoLibre and SHEIN configure notifications
-- per application in their consoles: their rows are `manual`, with the address to enter.
CREATE TABLE integ.webhook_subscriptions (
    connection_id bigint NOT NULL REFERENCES integ.connections (id) ON DELETE CASCADE,
    topic         text NOT NULL,
    -- integ.webhook_base_url || '/webhooks/' || marketplace (NULL: the GUC is not set)
    address       text,
    state         text NOT NULL CHECK (state IN ('subscribed', 'failed', 'skipped', 'manual')),
    remote_id     text,
    checked_at    timestamptz NOT NULL DEFAULT now(),
    error         text,
    PRIMARY KEY (connection_id, topic)
);

-- Shopify's mandatory privacy requests as the workers handled them; the record of a request
-- outlives the data it removed (shop/redact deletes the connection, not this row).
CREATE TABLE integ.privacy_requests (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    webhook_id  bigint,
    tenant_id   text NOT NULL,
    marketplace text NOT NULL,
    shop        text NOT NULL,
    topic       text NOT NULL CHECK (topic IN ('customers/data_request', 'customers/redact', 'shop/redact')),
    customer_id text,
    orders      text[] NOT NULL DEFAULT '{}',
    -- what was done: deliveries scrubbed, rows removed
    outcome     text
);
CREATE INDEX privacy_requests_by_customer ON integ.privacy_requests (shop, customer_id);

CREATE OR REPLACE FUNCTION integ.resume(tenant_id text, marketplace text)
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

CREATE OR REPLACE VIEW integ.status AS
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

REVOKE ALL ON integ.webhook_subscriptions, integ.privacy_requests, integ.subscriptions FROM PUBLIC;
REVOKE ALL ON FUNCTION integ.body_json(bytea), integ.customer_data(text, text) FROM PUBLIC;
GRANT SELECT ON integ.subscriptions TO integ_operator, integ_application;
GRANT EXECUTE ON FUNCTION integ.customer_data(text, text) TO integ_operator;

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

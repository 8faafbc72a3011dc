-- integration: tables, views and trigger functions.
-- Everything lives in schema integ (the control file's schema). Every table is WAL-logged:
-- the outbox, the log and the credentials survive crashes.

-- One row per (tenant, marketplace).
CREATE TABLE integ.connections (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL CHECK (tenant_id <> ''),
    marketplace     text NOT NULL CHECK (marketplace IN ('mercadolibre', 'shopify', 'tiktok', 'shein')),
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'paused', 'needs_reauthorization')),
    settings        jsonb NOT NULL DEFAULT '{}',
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, marketplace)
);

-- Secrets are one pgcrypto-encrypted JSON document; identifiers needed for routing
-- (client id, seller id, shop domain) stay readable.
CREATE TABLE integ.credentials (
    connection_id     bigint PRIMARY KEY REFERENCES integ.connections (id) ON DELETE CASCADE,
    tenant_id         text NOT NULL,
    marketplace       text NOT NULL,
    identifiers       jsonb NOT NULL DEFAULT '{}',
    secrets           bytea NOT NULL,
    key_version       integer NOT NULL DEFAULT 1,
    access_expires_at timestamptz,
    -- bumped on every change of the secrets, so per-process caches know when to re-read
    generation        bigint NOT NULL DEFAULT 1,
    refreshed_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- (tenant, marketplace, product) -> the marketplace's listing, and what we know of its stock.
CREATE TABLE integ.listings (
    id                bigserial PRIMARY KEY,
    connection_id     bigint NOT NULL REFERENCES integ.connections (id) ON DELETE CASCADE,
    tenant_id         text NOT NULL,
    marketplace       text NOT NULL,
    product_id        text NOT NULL,
    external_id       text NOT NULL CHECK (external_id <> ''),
    settings          jsonb NOT NULL DEFAULT '{}',
    -- EGDC's latest stock: the value every push sends (never an older one)
    desired_stock     integer,
    desired_at        timestamptz,
    last_pushed_stock integer,
    last_pushed_at    timestamptz,
    -- what the marketplace said it holds after our last push
    remote_stock      integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, marketplace, product_id)
);
CREATE INDEX listings_by_product ON integ.listings (tenant_id, product_id);
CREATE INDEX listings_by_connection ON integ.listings (connection_id);

-- The outbox. A job means "this listing must be brought to its desired_stock"; the value is
-- read from the listing at claim time, so coalesced or retried jobs never push a stale value.
CREATE TABLE integ.sync_jobs (
    id               bigserial PRIMARY KEY,
    listing_id       bigint NOT NULL REFERENCES integ.listings (id) ON DELETE CASCADE,
    connection_id    bigint NOT NULL,
    tenant_id        text NOT NULL,
    marketplace      text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'in_flight', 'done', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    claimed_by       integer,
    pushed_stock     integer,
    last_http_status integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sync_jobs_one_pending ON integ.sync_jobs (listing_id) WHERE state = 'pending';
CREATE UNIQUE INDEX sync_jobs_one_in_flight ON integ.sync_jobs (listing_id) WHERE state = 'in_flight';
CREATE INDEX sync_jobs_due ON integ.sync_jobs (connection_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX sync_jobs_by_connection ON integ.sync_jobs (connection_id, state);
CREATE INDEX sync_jobs_done ON integ.sync_jobs (updated_at) WHERE state = 'done';

-- Every attempt (and every skip and token refresh). Error texts are secret-free.
CREATE TABLE integ.sync_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    tenant_id     text NOT NULL,
    marketplace   text NOT NULL,
    connection_id bigint,
    listing_id    bigint,
    job_id        bigint,
    product_id    text,
    external_id   text,
    operation     text NOT NULL,  -- push | refresh
    outcome       text NOT NULL,  -- success | skipped | mismatch | retry | dead | failed
    stock         integer,
    remote_stock  integer,
    http_status   integer,
    latency_ms    double precision,
    attempt       integer,
    error         text
);
CREATE INDEX sync_log_by_connection ON integ.sync_log (connection_id, id);
CREATE INDEX sync_log_by_listing ON integ.sync_log (listing_id, id);

-- Inventory tables watched by integ.track_inventory.
CREATE TABLE integ.tracked_tables (
    relid          oid PRIMARY KEY,
    table_name     text NOT NULL,
    tenant_column  name NOT NULL,
    product_column name NOT NULL,
    stock_column   name NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Record EGDC's new stock for every listing of (tenant, product) and make sure each has one
-- pending job. Jobs of paused connections wait in the queue until the connection is active.
CREATE FUNCTION integ.enqueue_stock(p_tenant text, p_product text, p_stock numeric)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_stock integer := CASE WHEN p_stock IS NULL OR p_stock < 0 THEN 0
                            WHEN p_stock > 2147483647 THEN 2147483647
                            ELSE floor(p_stock)::integer END;
    v_listings integer;
BEGIN
    IF p_tenant IS NULL OR p_product IS NULL THEN
        RETURN 0;
    END IF;
    WITH l AS (
        UPDATE integ.listings
           SET desired_stock = v_stock, desired_at = clock_timestamp()
         WHERE tenant_id = p_tenant AND product_id = p_product
        RETURNING id, connection_id, tenant_id, marketplace
    ), j AS (
        INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
        SELECT id, connection_id, tenant_id, marketplace FROM l
        ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO v_listings FROM l;
    IF v_listings > 0 THEN
        PERFORM integ.wake_workers_at_commit();
    END IF;
    RETURN v_listings;
END
$$;

-- The trigger installed by integ.track_inventory; its arguments name the tenant, product and
-- stock columns. A change of tenant or product moves the stock: the old key goes to 0.
CREATE FUNCTION integ.track_stock()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    o jsonb;
    n jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;
    IF o IS NOT NULL AND (n IS NULL
                          OR o ->> TG_ARGV[0] IS DISTINCT FROM n ->> TG_ARGV[0]
                          OR o ->> TG_ARGV[1] IS DISTINCT FROM n ->> TG_ARGV[1]) THEN
        PERFORM integ.enqueue_stock(o ->> TG_ARGV[0], o ->> TG_ARGV[1], 0);
    END IF;
    IF n IS NOT NULL THEN
        PERFORM integ.enqueue_stock(n ->> TG_ARGV[0], n ->> TG_ARGV[1], (n ->> TG_ARGV[2])::numeric);
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA integ FROM PUBLIC;

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
    -- when the workers next check its webhook subscriptions (NULL: not due; set by connecting,
    -- authorizing, every reconciliation and a change of integ.webhook_base_url)
    subscriptions_due_at timestamptz DEFAULT now(),
    UNIQUE (tenant_id, marketplace)
);
CREATE INDEX connections_subscriptions_due ON integ.connections (subscriptions_due_at)
    WHERE subscriptions_due_at IS NOT NULL;

-- Secrets are one pgcrypto-encrypted JSON document; identifiers needed for routing
-- (client id, seller id, shop domain) stay readable.
CREATE TABLE integ.credential_store (
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
    -- WAL position the desired stock dates from (commit of a captured message, or where the
    -- trigger's table path wrote it): a change read back later only applies if newer
    desired_lsn       bigint,
    last_pushed_stock integer,
    last_pushed_at    timestamptz,
    -- what the marketplace said it holds after our last push
    remote_stock      integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- EGDC's latest price (before the channel's price rules) and its currency, when a tracked
    -- price table has the product (desired_price_lsn set; desired_price NULL: EGDC's is NULL)
    desired_price     numeric,
    price_currency    text,
    desired_price_at  timestamptz,
    desired_price_lsn bigint,
    -- the price last published (after the rules), and what the marketplace last said it shows
    last_pushed_price numeric,
    last_pushed_price_at timestamptz,
    remote_price      numeric,
    -- the desired_price_lsn whose price the rules refused (NULL, negative, another currency):
    -- dead-lettered once, not again until EGDC's price changes
    price_refused_lsn bigint,
    -- integ.hold: nothing of EGDC's is pushed while set (changes are still recorded); integ.revert
    -- also sets the values the marketplace held before a bad change, pushed instead
    held_since        timestamptz,
    revert_stock      integer,
    revert_price      numeric,
    UNIQUE (tenant_id, marketplace, product_id)
) WITH (fillfactor = 50);  -- room on each page so desired-stock updates are HOT (no index writes)
-- pattern_ops: the same equality, compared bytewise rather than through the database's
-- collation (strcoll) -- every stock change captured is one lookup here
CREATE INDEX listings_by_product ON integ.listings (tenant_id text_pattern_ops, product_id text_pattern_ops);
CREATE INDEX listings_by_connection ON integ.listings (connection_id, external_id);

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
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- a job that pushed nothing (skipped, dead-lettered) still owes a look at its listing,
    -- with the EGDC stock it was computed from: a transaction that found it pending may have
    -- written a newer stock meanwhile. Kept here, not in a worker's memory, so a crash between
    -- recording the job and that look loses nothing.
    recheck          boolean NOT NULL DEFAULT false,
    recheck_stock    integer,
    -- made for a price change: the stock goes too only if it differs from the last one pushed
    price_only       boolean NOT NULL DEFAULT false,
    -- with `recheck`: the listing's desired_price_lsn the job was claimed with
    recheck_price_lsn bigint
);
CREATE INDEX sync_jobs_recheck ON integ.sync_jobs (id) WHERE recheck;
CREATE UNIQUE INDEX sync_jobs_one_pending ON integ.sync_jobs (listing_id) WHERE state = 'pending';
CREATE UNIQUE INDEX sync_jobs_one_in_flight ON integ.sync_jobs (listing_id) WHERE state = 'in_flight';
CREATE INDEX sync_jobs_due ON integ.sync_jobs (connection_id, next_attempt_at) WHERE state = 'pending';
-- dead jobs per connection without reading the others (integ.metrics)
CREATE INDEX sync_jobs_dead ON integ.sync_jobs (connection_id) WHERE state = 'dead';
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
    error         text,
    -- EGDC's stock the pushed value was computed from (the channel's stock rules make them differ)
    egdc_stock    integer,
    -- price operations: the price sent (after the channel's price rules) and EGDC's it came from
    price         numeric,
    egdc_price    numeric,
    -- API requests this row accounts for: a batch's request is counted on its first row (usage
    -- and health are rolled up from these)
    calls         integer NOT NULL DEFAULT 0
);
CREATE INDEX sync_log_by_connection ON integ.sync_log (connection_id, id);
CREATE INDEX sync_log_by_listing ON integ.sync_log (listing_id, id);

-- Every webhook delivery handed to integ.receive_webhook, verified or not. Only verified
-- deliveries keep their body; each accepted event id appears once (duplicates are recorded as
-- such and change nothing).
CREATE TABLE integ.webhooks (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    marketplace   text NOT NULL,
    tenant_id     text,
    connection_id bigint REFERENCES integ.connections (id) ON DELETE SET NULL,
    event_id      text,
    topic         text,
    status        text NOT NULL CHECK (status IN ('accepted', 'duplicate', 'rejected')),
    verified      boolean NOT NULL DEFAULT false,
    http_status   integer NOT NULL,
    reason        text,
    body_size     integer NOT NULL,
    body_sha256   text NOT NULL,
    body          bytea,
    -- processing by the workers: pending -> done | failed (retried) | dead; ignored when not accepted
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'dead', 'ignored')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    error         text,
    -- once applied, `body` keeps only the fields processing used (ids, lines, quantities,
    -- timestamps: no customer data); body_size and body_sha256 still describe what arrived
    body_reduced  boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX webhooks_one_event ON integ.webhooks (marketplace, event_id) WHERE status = 'accepted';
CREATE INDEX webhooks_to_process ON integ.webhooks (next_attempt_at, id) WHERE state IN ('pending', 'failed');
CREATE INDEX webhooks_by_age ON integ.webhooks (received_at);

-- Order lines applied to EGDC's stock: one row per (marketplace, tenant, order, line), so a
-- line is taken once however many times its order arrives, and given back once on cancellation.
CREATE TABLE integ.order_lines (
    marketplace  text NOT NULL,
    tenant_id    text NOT NULL,
    order_id     text NOT NULL,
    line_id      text NOT NULL,
    product_id   text NOT NULL,
    quantity     integer NOT NULL,
    webhook_id   bigint,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    PRIMARY KEY (marketplace, tenant_id, order_id, line_id)
);

-- Stock changed on a marketplace that a connection with conflict_strategy 'manual' leaves for a
-- person to decide (integ.resolve_conflict). At most one open conflict per listing: a newer
-- remote value updates it.
CREATE TABLE integ.conflicts (
    id                bigserial PRIMARY KEY,
    tenant_id         text NOT NULL,
    marketplace       text NOT NULL,
    connection_id     bigint NOT NULL REFERENCES integ.connections (id) ON DELETE CASCADE,
    listing_id        bigint NOT NULL REFERENCES integ.listings (id) ON DELETE CASCADE,
    product_id        text NOT NULL,
    external_id       text NOT NULL,
    -- EGDC's stock, what the channel's rules publish from it, what the marketplace holds, and
    -- what we believed it held before the change
    egdc_stock        integer,
    published_stock   integer,
    remote_stock      bigint NOT NULL,
    known_remote      integer,
    source            text NOT NULL CHECK (source IN ('webhook', 'reconcile')),
    remote_changed_at timestamptz,
    detected_at       timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution        text CHECK (resolution IN ('egdc_wins', 'marketplace_wins', 'dismiss')),
    resolved_at       timestamptz,
    resolved_by       text,
    -- why it needs a person beyond the manual strategy (a stock outside integ.max_stock)
    reason            text
);
CREATE UNIQUE INDEX conflicts_one_open ON integ.conflicts (listing_id) WHERE status = 'open';
CREATE INDEX conflicts_by_tenant ON integ.conflicts (tenant_id, status);

-- Master key versions after the first (which is integ.key_file): where each key's file is and a
-- fingerprint to recognise it. Never the key.
CREATE TABLE integ.master_keys (
    version     integer PRIMARY KEY CHECK (version > 1),
    key_file    text NOT NULL,
    fingerprint text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- This installation's marketplace apps (one per marketplace), for the authorization flows:
-- the app's id readable, its secret encrypted like the credentials.
CREATE TABLE integ.apps (
    marketplace text PRIMARY KEY CHECK (marketplace IN ('mercadolibre', 'shopify', 'tiktok', 'shein')),
    identifiers jsonb NOT NULL DEFAULT '{}',
    secrets     bytea NOT NULL,
    key_version integer NOT NULL DEFAULT 1,
    settings    jsonb NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Authorizations in progress (integ.authorize_url -> integ.complete_authorization). The state
-- is kept only as its SHA-256; it works once and for 10 minutes. The PKCE verifier is
-- encrypted.
CREATE TABLE integ.authorizations (
    state_sha256  text PRIMARY KEY,
    tenant_id     text NOT NULL,
    marketplace   text NOT NULL,
    redirect_uri  text NOT NULL,
    options       jsonb NOT NULL DEFAULT '{}',
    code_verifier bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    connection_id bigint
);

-- What an operator must act on; also sent as NOTIFY integ_alerts (JSON) when raised.
CREATE TABLE integ.alerts (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    tenant_id       text NOT NULL,
    marketplace     text NOT NULL,
    connection_id   bigint,
    kind            text NOT NULL,
    message         text NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    -- alerts of the rules (error_rate, backlog_age, webhook_slow, circuit_open) resolve
    -- themselves: since when the condition has been clear, and when it had been for a window
    clear_since     timestamptz,
    resolved_at     timestamptz
);
CREATE INDEX alerts_open ON integ.alerts (at) WHERE acknowledged_at IS NULL;

-- Inventory tables watched by integ.track_inventory.
CREATE TABLE integ.tracked_tables (
    relid          oid PRIMARY KEY,
    table_name     text NOT NULL,
    tenant_column  name NOT NULL,
    product_column name NOT NULL,
    stock_column   name NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Price tables watched by integ.track_prices (the price may live apart from the stock).
CREATE TABLE integ.tracked_price_tables (
    relid           oid PRIMARY KEY,
    table_name      text NOT NULL,
    tenant_column   name NOT NULL,
    product_column  name NOT NULL,
    price_column    name NOT NULL,
    currency_column name,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Whether stock changes were being captured by WAL message, and the slot position the capture
-- worker last moved to (written before each move). Unlike the replication slot, this row
-- replicates and is restored with the data: a capture worker that finds no slot, or one that
-- does not reach back to this position (a promoted standby, a restored backup, pg_upgrade, a slot
-- dropped by hand), knows that messages may be lost and reads EGDC's stock again.
CREATE TABLE integ.capture_state (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    by_message   boolean NOT NULL DEFAULT false,
    slot_restart pg_lsn,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO integ.capture_state DEFAULT VALUES;

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

-- integ.enqueue_stock and the trigger function integ.track_stock are written in Rust
-- (src/capture.rs): they run inside the application's stock-changing transactions.

REVOKE ALL ON ALL TABLES IN SCHEMA integ FROM PUBLIC;

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

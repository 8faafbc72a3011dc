-- integration 0.1.0 -> 0.2.0, run by ALTER EXTENSION integration UPDATE.
-- 0.2.0 is in development: this script grows with it until v0.2.0 is tagged, and is never
-- edited after that. An upgraded database must equal a fresh 0.2.0 install (tests/upgrade.rs).
\echo Use "ALTER EXTENSION integration UPDATE" to load this file. \quit
